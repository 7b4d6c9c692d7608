/* Processes for exporter/tests/output_live.rs (the output collector on the real kernel).
 *
 *   output logger   4 threads take one lock and write ever longer lines to stdout (a service whose threads share
 *                   one logger): when stdout stops being read, one thread blocks in write(1) holding the lock and
 *                   the 3 others wait on it (futex).
 *   output lock     one thread waits forever on a lock the main thread holds (futex); nothing is written.
 *   output churn    threads that write one line each and exit, created without pause (threads exiting mid-scan).
 *
 * Prints nothing else; dies with its parent (PR_SET_PDEATHSIG).
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t len = 1;

static void *logger(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        size_t n = len++;
        char *line = malloc(n + 1);
        memset(line, 'a', n);
        line[n] = '\n';
        size_t done = 0;
        while (done < n + 1) {
            ssize_t w = write(1, line + done, n + 1 - done);
            if (w <= 0) _exit(3);
            done += (size_t)w;
        }
        free(line);
        if (len > 1 << 20) len = 1;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void *once(void *arg) {
    (void)arg;
    if (write(1, "t\n", 2) < 0) _exit(3);
    return NULL;
}

static void *waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc < 2) return 2;
    pthread_t t;
    if (strcmp(argv[1], "logger") == 0) {
        for (int i = 0; i < 4; i++) pthread_create(&t, NULL, logger, NULL);
    } else if (strcmp(argv[1], "lock") == 0) {
        pthread_mutex_lock(&lock);
        pthread_create(&t, NULL, waiter, NULL);
    } else if (strcmp(argv[1], "churn") == 0) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        for (;;) {
            if (pthread_create(&t, &at, once, NULL) != 0) usleep(1000);
        }
    } else {
        return 2;
    }
    for (;;) pause();
}
