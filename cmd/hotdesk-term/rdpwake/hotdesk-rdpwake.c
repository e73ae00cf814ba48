//go:build ignore

/*
 * hotdesk-rdpwake: an LD_PRELOAD library for FreeRDP 2 clients (xfreerdp).
 *
 * FreeRDP 2 runs the RDP connection sequence (MCS connect, attach user,
 * channel joins, licensing, capabilities, finalization: about eight
 * request/response steps) in a loop that reads what has arrived and then
 * calls WinPR's Sleep(100) (libfreerdp/core/connection.c rdp_client_connect,
 * activation.c for a reactivation). Every step therefore waits for the end
 * of a 100 ms sleep, although its answer arrives within a millisecond: the
 * connection takes 0.5-0.9 s instead of tens of milliseconds. FreeRDP 3
 * waits on its sockets instead.
 *
 * This library replaces Sleep: Sleep(100) — only that value, used only by
 * those two loops — waits at most 100 ms for one of the process's TCP
 * sockets to have data to read, so the loop goes on as soon as the answer
 * is there. Any other value sleeps as before. A socket that stays readable
 * without being read (not the RDP connection) cannot turn the wait into a
 * busy loop: when it finds data already waiting three calls in a row, the
 * third sleeps the full 100 ms.
 *
 * Build: cc -O2 -shared -fPIC -o hotdesk-rdpwake.so hotdesk-rdpwake.c
 * Use:   LD_PRELOAD=/usr/lib/hotdesk/hotdesk-rdpwake.so xfreerdp ...
 * (hotdesk-term does this for its built-in "freerdp" display command).
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 1024   /* descriptors looked at */
#define MAX_WAIT_FDS 16 /* TCP sockets waited on */
#define MAX_IMMEDIATE 3 /* wakes in a row without waiting before sleeping fully */

static __thread int immediate; /* consecutive wakes that did not wait */

/* tcp_sockets fills fds with the connected TCP sockets of the process. */
static nfds_t tcp_sockets(struct pollfd *fds)
{
	nfds_t n = 0;
	for (int fd = 0; fd < MAX_FDS && n < MAX_WAIT_FDS; fd++) {
		int type;
		socklen_t len = sizeof type;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
			continue;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
			continue;
		if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
			continue;
		fds[n].fd = fd;
		fds[n].events = POLLIN;
		fds[n].revents = 0;
		n++;
	}
	return n;
}

/* Sleep is WinPR's VOID Sleep(DWORD dwMilliseconds). */
void Sleep(unsigned int ms)
{
	if (ms != 100) {
		usleep((useconds_t)ms * 1000);
		return;
	}
	struct pollfd fds[MAX_WAIT_FDS];
	nfds_t n = tcp_sockets(fds);
	if (n > 0 && poll(fds, n, 0) > 0) {
		/* Readable already: data that raced the caller's read, or a
		 * socket nobody reads here. */
		if (++immediate >= MAX_IMMEDIATE) {
			immediate = 0;
			usleep((useconds_t)ms * 1000);
		}
		return;
	}
	immediate = 0;
	poll(fds, n, (int)ms);
}
