/*
 * Metrics as text, in three forms from one sequence of calls: the
 * Prometheus text exposition format (version 0.0.4) that GET /metrics
 * serves, the NAME{LABELS}=VALUE lines of `dotproxyctl stats`, and JSON for
 * scripts (`dotproxyctl --json stats`).  The caller opens a family (name,
 * type, help) and adds its samples; the writer writes HELP and TYPE once per
 * family (before its first sample: a family without samples leaves no
 * trace), escapes label values and, for a histogram, makes the buckets
 * cumulative and adds the +Inf bucket, _sum and _count.  A family name given
 * twice, or a name Prometheus would reject, is refused (prom_family()
 * returns -EINVAL and its samples are dropped): the output stays valid.
 *
 * Pure: everything is appended to a growable buffer; nothing here knows
 * which metrics dotproxy has (lib/metrics does).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** A growable text buffer.  Zero-initialised is empty. */
struct prom_buf {
	char *data; /**< NUL-terminated once anything was written; owned */
	size_t len; /**< bytes written, the NUL not included */
	size_t cap;
	bool failed; /**< out of memory or over PROM_BUF_MAX: data is incomplete */
};

enum {
	PROM_BUF_MAX = 16 << 20, /**< a buffer never grows past this */
	PROM_MAX_FAMILIES = 128, /**< families one writer may open */
	PROM_MAX_LABELS = 8,	 /**< labels of one sample, le included */
};

/** Append @len bytes. */
void prom_buf_append(struct prom_buf *b, const char *s, size_t len);

/** Append formatted text. */
void prom_buf_printf(struct prom_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Free the buffer's memory; it is empty again. */
void prom_buf_free(struct prom_buf *b);

enum prom_format {
	PROM_EXPOSITION, /**< # HELP, # TYPE, then "name{a="b"} 1" lines */
	PROM_LINES,	 /**< "name{a="b"}=1" lines, no HELP or TYPE */
	PROM_JSON,	 /**< {"metrics":[{"name":..,"type":..,"labels":{..},"value":..},..]} */
};

enum prom_type {
	PROM_COUNTER,
	PROM_GAUGE,
	PROM_HISTOGRAM,
};

/** One label of a sample.  Names match [a-zA-Z_][a-zA-Z0-9_]* and do not
 * start with "__"; values are any text (escaped as the format needs). */
struct prom_label {
	const char *name;
	const char *value;
};

/** Writes families and samples to a buffer, in one format. */
struct prom_writer {
	struct prom_buf *out;
	enum prom_format format;
	/* the family open now */
	char family[128];
	const char *help;
	enum prom_type type;
	bool family_ok;		       /**< the family was accepted: its samples are written */
	bool header_done;	       /**< its HELP and TYPE are out */
	unsigned n_samples;	       /**< samples written in all (JSON: commas) */
	char *seen[PROM_MAX_FAMILIES]; /**< names of the families opened (owned) */
	unsigned n_seen;
	unsigned errors; /**< calls refused (bad names, a family opened twice) */
};

/** Start writing to @out (appended to) in @format. */
void prom_writer_init(struct prom_writer *w, struct prom_buf *out, enum prom_format format);

/** Open family @name of @type, described by @help (one line; kept by
 * pointer until the next family).  Returns 0, or -EINVAL when the name is
 * not a valid metric name, was opened before, or too many families were:
 * then the samples until the next family are dropped. */
int prom_family(struct prom_writer *w, const char *name, enum prom_type type, const char *help);

/** A sample of the open counter or gauge with @n labels: an integer value,
 * written exactly. */
void prom_sample_u64(struct prom_writer *w, const struct prom_label *labels, size_t n,
		     uint64_t value);

/** The same with a floating-point value (NaN and infinities as Prometheus
 * writes them; null in JSON). */
void prom_sample(struct prom_writer *w, const struct prom_label *labels, size_t n, double value);

/**
 * One histogram of the open histogram family, with @n labels (no "le"):
 * @counts[i] observations fell in (@bounds[i-1], @bounds[i]] for i <
 * @n_bounds, and @counts[@n_bounds] above the last bound.  Written as
 * cumulative _bucket samples with le="bound" and le="+Inf", then _sum
 * (@sum) and _count (the +Inf bucket, so they always agree).  @bounds must
 * increase.
 */
void prom_histogram(struct prom_writer *w, const struct prom_label *labels, size_t n,
		    const double *bounds, const uint64_t *counts, size_t n_bounds, double sum);

/** Finish the output (closes the JSON document) and free what the writer
 * holds; the buffer stays the caller's. */
void prom_writer_end(struct prom_writer *w);

/** Is @name a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)? */
bool prom_valid_metric_name(const char *name);

/** Is @name a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting "__")? */
bool prom_valid_label_name(const char *name);

/** Append @s as a JSON string (quotes included): '"', '\\' and every byte
 * below 0x20 or above 0x7e escaped, so the result is ASCII whatever @s is. */
void prom_json_string(struct prom_buf *b, const char *s);
