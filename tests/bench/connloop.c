/* Loopback connect/accept/close loop for tests/bench/connect_bench.py: a listener thread accepts, reads to EOF
 * (its end goes CLOSE_WAIT when the client closes) and closes; the main thread connects and closes, for SECONDS
 * seconds, cycling the destination over 127.0.0.1-127.0.0.250 so TIME_WAIT never exhausts the ports of one
 * 4-tuple space. Prints the connections completed per second. Every connection makes about ten TCP state changes
 * (client: SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, close; server: SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK,
 * close).   cc -O2 -pthread connloop.c -o connloop && ./connloop SECONDS */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int lsn;

static void *server(void *arg)
{
	char buf[64];
	(void)arg;
	for (;;) {
		int c = accept(lsn, NULL, NULL);
		if (c < 0)
			continue;
		while (read(c, buf, sizeof buf) > 0)
			;
		close(c);
	}
	return NULL;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 2;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	socklen_t len = sizeof a;
	pthread_t t;
	long n = 0;
	int one = 1;

	lsn = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lsn, (struct sockaddr *)&a, sizeof a) || listen(lsn, 4096) || getsockname(lsn, (struct sockaddr *)&a, &len)) {
		perror("listener");
		return 1;
	}
	pthread_create(&t, NULL, server, NULL);
	double start = now(), end = start + seconds;
	while (now() < end) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		a.sin_addr.s_addr = htonl(0x7f000001 + (n % 250));
		if (connect(c, (struct sockaddr *)&a, sizeof a)) {
			perror("connect");
			return 1;
		}
		close(c);
		n++;
	}
	printf("%.0f\n", n / (now() - start));
	return 0;
}
