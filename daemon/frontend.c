/*
 * What every frontend needs alike: peer addresses as text for logs, and
 * SO_REUSEPORT for listening sockets shared by workers.
 */
#include "daemon/frontend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>

void frontend_addr_text(const struct sockaddr *sa, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
	}
	snprintf(buf, cap, "%s#%u", ip, port);
}

int frontend_share_port(uv_handle_t *handle)
{
	uv_os_fd_t fd;
	int one = 1;
	int rc = uv_fileno(handle, &fd);

	if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		rc = -errno;
	return rc;
}
