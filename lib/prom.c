/*
 * The text forms of metrics.  Label values are escaped as the exposition
 * format says (backslash, double quote and line feed; nothing else needs
 * it), HELP text likewise without the quote; JSON strings are escaped to
 * plain ASCII.  Histograms are given per-bucket counts and written
 * cumulative, so a caller cannot get that wrong.
 */
#include "lib/prom.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool grow(struct prom_buf *b, size_t more)
{
	if (b->failed)
		return false;
	if (b->len + more + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more + 1)
		cap *= 2;
	if (cap > PROM_BUF_MAX) {
		b->failed = true;
		return false;
	}
	char *data = realloc(b->data, cap);
	if (!data) {
		b->failed = true;
		return false;
	}
	b->data = data;
	b->cap = cap;
	return true;
}

void prom_buf_append(struct prom_buf *b, const char *s, size_t len)
{
	if (!grow(b, len))
		return;
	memcpy(b->data + b->len, s, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void prom_buf_printf(struct prom_buf *b, const char *fmt, ...)
{
	va_list ap;
	char small[256];

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		prom_buf_append(b, small, (size_t)n);
		return;
	}
	if (!grow(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void prom_buf_free(struct prom_buf *b)
{
	free(b->data);
	*b = (struct prom_buf){ 0 };
}

static bool name_char(char c, bool first, bool colon)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':'))
		return true;
	return !first && c >= '0' && c <= '9';
}

bool prom_valid_metric_name(const char *name)
{
	if (!name || !name[0])
		return false;
	for (size_t i = 0; name[i]; i++)
		if (!name_char(name[i], i == 0, true))
			return false;
	return true;
}

bool prom_valid_label_name(const char *name)
{
	if (!name || !name[0] || (name[0] == '_' && name[1] == '_'))
		return false;
	for (size_t i = 0; name[i]; i++)
		if (!name_char(name[i], i == 0, false))
			return false;
	return true;
}

void prom_json_string(struct prom_buf *b, const char *s)
{
	prom_buf_append(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char esc[2] = { '\\', (char)*p };
			prom_buf_append(b, esc, 2);
		} else if (*p < 0x20 || *p > 0x7e) {
			prom_buf_printf(b, "\\u%04x", *p);
		} else {
			prom_buf_append(b, (const char *)p, 1);
		}
	}
	prom_buf_append(b, "\"", 1);
}

/* A label value, or HELP text (@quote false), escaped for the exposition
 * format. */
static void escaped(struct prom_buf *b, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			prom_buf_append(b, "\\\\", 2);
		else if (*s == '\n')
			prom_buf_append(b, "\\n", 2);
		else if (*s == '"' && quote)
			prom_buf_append(b, "\\\"", 2);
		else
			prom_buf_append(b, s, 1);
	}
}

void prom_writer_init(struct prom_writer *w, struct prom_buf *out, enum prom_format format)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
	w->format = format;
	if (format == PROM_JSON)
		prom_buf_append(out, "{\"metrics\":[", 12);
}

static const char *type_name(enum prom_type type)
{
	switch (type) {
	case PROM_COUNTER:
		return "counter";
	case PROM_GAUGE:
		return "gauge";
	case PROM_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

int prom_family(struct prom_writer *w, const char *name, enum prom_type type, const char *help)
{
	w->family_ok = false;
	w->header_done = false;
	w->family[0] = '\0';
	if (!prom_valid_metric_name(name) || strlen(name) >= sizeof(w->family) - 8 ||
	    w->n_seen == PROM_MAX_FAMILIES) {
		w->errors++;
		return -EINVAL;
	}
	for (unsigned i = 0; i < w->n_seen; i++) {
		if (strcmp(w->seen[i], name) == 0) {
			w->errors++;
			return -EINVAL;
		}
	}
	char *copy = strdup(name);
	if (!copy) {
		w->out->failed = true;
		return -ENOMEM;
	}
	w->seen[w->n_seen++] = copy;
	snprintf(w->family, sizeof(w->family), "%s", name);
	w->help = help ? help : "";
	w->type = type;
	w->family_ok = true;
	return 0;
}

static bool labels_ok(const struct prom_label *labels, size_t n)
{
	if (n > PROM_MAX_LABELS)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!prom_valid_label_name(labels[i].name) || !labels[i].value)
			return false;
		for (size_t j = 0; j < i; j++)
			if (strcmp(labels[i].name, labels[j].name) == 0)
				return false;
	}
	return true;
}

static void header(struct prom_writer *w)
{
	if (w->header_done || w->format != PROM_EXPOSITION) {
		w->header_done = true;
		return;
	}
	w->header_done = true;
	prom_buf_printf(w->out, "# HELP %s ", w->family);
	escaped(w->out, w->help, false);
	prom_buf_printf(w->out, "\n# TYPE %s %s\n", w->family, type_name(w->type));
}

/* One sample line (or JSON object) named family + @suffix, value already
 * formatted as text (@json_value: the same for JSON). */
static void write_sample(struct prom_writer *w, const char *suffix, const struct prom_label *labels,
			 size_t n, const char *value, const char *json_value)
{
	struct prom_buf *b = w->out;

	header(w);
	if (w->format == PROM_JSON) {
		if (w->n_samples)
			prom_buf_append(b, ",", 1);
		prom_buf_printf(b, "{\"name\":\"%s%s\",\"type\":\"%s\",\"labels\":{", w->family,
				suffix, type_name(w->type));
		for (size_t i = 0; i < n; i++) {
			if (i)
				prom_buf_append(b, ",", 1);
			prom_json_string(b, labels[i].name);
			prom_buf_append(b, ":", 1);
			prom_json_string(b, labels[i].value);
		}
		prom_buf_printf(b, "},\"value\":%s}", json_value);
	} else {
		prom_buf_printf(b, "%s%s", w->family, suffix);
		if (n) {
			prom_buf_append(b, "{", 1);
			for (size_t i = 0; i < n; i++) {
				prom_buf_printf(b, "%s%s=\"", i ? "," : "", labels[i].name);
				escaped(b, labels[i].value, true);
				prom_buf_append(b, "\"", 1);
			}
			prom_buf_append(b, "}", 1);
		}
		prom_buf_printf(b, "%c%s\n", w->format == PROM_LINES ? '=' : ' ', value);
	}
	w->n_samples++;
}

/* The shortest text that reads back as exactly @v (a _sum after months
 * of uptime needs more than 9 digits; 0.000412 should not print as
 * 0.00041200000000000002); the special values as Prometheus writes them.
 * @json: null for those, which JSON cannot carry. */
static void format_double(double v, char *buf, size_t cap, bool json)
{
	if (isnan(v)) {
		snprintf(buf, cap, "%s", json ? "null" : "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(buf, cap, "%s", json ? "null" : v > 0 ? "+Inf" : "-Inf");
		return;
	}
	for (int digits = 6; digits <= 17; digits++) {
		snprintf(buf, cap, "%.*g", digits, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

void prom_sample_u64(struct prom_writer *w, const struct prom_label *labels, size_t n,
		     uint64_t value)
{
	char text[32];

	if (!w->family_ok || w->type == PROM_HISTOGRAM || !labels_ok(labels, n)) {
		w->errors++;
		return;
	}
	snprintf(text, sizeof(text), "%" PRIu64, value);
	write_sample(w, "", labels, n, text, text);
}

void prom_sample(struct prom_writer *w, const struct prom_label *labels, size_t n, double value)
{
	char text[40], json[40];

	if (!w->family_ok || w->type == PROM_HISTOGRAM || !labels_ok(labels, n)) {
		w->errors++;
		return;
	}
	format_double(value, text, sizeof(text), false);
	format_double(value, json, sizeof(json), true);
	write_sample(w, "", labels, n, text, json);
}

void prom_histogram(struct prom_writer *w, const struct prom_label *labels, size_t n,
		    const double *bounds, const uint64_t *counts, size_t n_bounds, double sum)
{
	struct prom_label with_le[PROM_MAX_LABELS];
	char le[40], text[40], json[40];
	uint64_t total = 0;

	if (!w->family_ok || w->type != PROM_HISTOGRAM || n >= PROM_MAX_LABELS ||
	    !labels_ok(labels, n)) {
		w->errors++;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(labels[i].name, "le") == 0) {
			w->errors++;
			return;
		}
		with_le[i] = labels[i];
	}
	with_le[n] = (struct prom_label){ "le", le };
	for (size_t i = 0; i <= n_bounds; i++) {
		total += counts[i];
		if (i < n_bounds)
			format_double(bounds[i], le, sizeof(le), false);
		else
			snprintf(le, sizeof(le), "+Inf");
		snprintf(text, sizeof(text), "%" PRIu64, total);
		write_sample(w, "_bucket", with_le, n + 1, text, text);
	}
	format_double(sum, text, sizeof(text), false);
	format_double(sum, json, sizeof(json), true);
	write_sample(w, "_sum", labels, n, text, json);
	snprintf(text, sizeof(text), "%" PRIu64, total);
	write_sample(w, "_count", labels, n, text, text);
}

void prom_writer_end(struct prom_writer *w)
{
	if (w->format == PROM_JSON)
		prom_buf_append(w->out, "]}\n", 3);
	for (unsigned i = 0; i < w->n_seen; i++)
		free(w->seen[i]);
	w->n_seen = 0;
	w->family_ok = false;
}
