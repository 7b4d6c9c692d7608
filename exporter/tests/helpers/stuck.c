/*
 * Test helper for the memory collector (exporter/tests/memory_live.rs), built by the test with `cc -pthread`.
 *
 *   stuck MOUNTPOINT
 *
 * Makes a process whose /proc/<pid>/smaps_rollup, environ, cmdline and smaps cannot be read: the classic
 * "ps hangs" of a process faulting on a dead NFS or FUSE mount, reproduced with a FUSE file system served here
 * that never answers a read.
 *
 * Why FUSE and not userfaultfd: on Linux 6.x a thread waiting in a userfaultfd fault has dropped the mmap lock
 * (handle_userfault needs FAULT_FLAG_ALLOW_RETRY and releases the lock before sleeping), and a fault without
 * ALLOW_RETRY (remote GUP) gets SIGBUS at once, so nothing else ever blocks behind it (checked on 6.18). A page
 * cache fault on a FUSE file from remote GUP (`/proc/self/mem`, the same path `cat /proc/<pid>/environ` takes)
 * holds the mmap lock for read for as long as the FUSE server does not answer.
 *
 * How: in a mount namespace of its own (so the mount disappears with the process, whatever happens), this
 * process mounts a FUSE file system with one 1 MiB file `f` on MOUNTPOINT and serves it. It forks the victim,
 * named `nsstuck-victim`, which maps `f` and, in thread 1, reads the mapping through /proc/self/mem: the read
 * faults, the kernel asks this server for the page, and the server does not answer, so thread 1 sits in the
 * fault holding the victim's mmap lock for read. Thread 2 of the victim then calls mmap(), which queues for the
 * lock in write mode; every later reader of the victim's mmap lock (smaps_rollup, environ, cmdline, smaps) queues
 * behind that writer. The server then prints "STUCK <victim pid>".
 *
 * A line "release" on stdin answers the pending reads (the victim becomes a normal, readable process again) and
 * prints "RELEASED". End of stdin (the test is done, or died) exits: closing /dev/fuse aborts the connection,
 * which fails the pending read, and the victim, whose parent-death signal is SIGKILL, dies with this process.
 * Errors go to stderr with exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE (1 << 20)
#define MAP_LEN (64 * 1024)

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* ---- victim ---------------------------------------------------------------------------------------------- */

static char *mapping;
static int go_pipe[2];

static void *hold_lock(void *arg) {
    (void)arg;
    int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open /proc/self/mem");
    char buf[16];
    /* Remote GUP of a FUSE page: the fault waits for the server with the mmap lock held. */
    if (pread(fd, buf, sizeof buf, (off_t)(uintptr_t)mapping) < 0) perror("victim: read of the FUSE mapping");
    close(fd);
    return NULL;
}

static void *queue_writer(void *arg) {
    (void)arg;
    char c;
    if (read(go_pipe[0], &c, 1) != 1) return NULL;
    /* Waits for the mmap lock in write mode behind thread 1; readers arriving later queue behind this. */
    void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) perror("victim: mmap");
    return NULL;
}

static void victim(const char *mnt, pid_t server) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
    if (getppid() != server) _exit(1);
    prctl(PR_SET_NAME, "nsstuck-victim");
    char path[4096];
    snprintf(path, sizeof path, "%s/f", mnt);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("victim: open");
    mapping = mmap(NULL, MAP_LEN, PROT_READ, MAP_SHARED, fd, 0);
    if (mapping == MAP_FAILED) die("victim: mmap of the FUSE file");
    pthread_t t1, t2;
    if (pthread_create(&t2, NULL, queue_writer, NULL) != 0) die("pthread_create");
    if (pthread_create(&t1, NULL, hold_lock, NULL) != 0) die("pthread_create");
    for (;;) pause();
}

/* ---- FUSE server ----------------------------------------------------------------------------------------- */

static int fuse_fd;
static char reqbuf[FUSE_MIN_READ_BUFFER + 128 * 1024];
static char zeros[256 * 1024];

static void reply(uint64_t unique, int error, const void *data, size_t len) {
    struct fuse_out_header h = {.len = sizeof h + (error ? 0 : len), .error = error, .unique = unique};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)data, error ? 0 : len}};
    if (writev(fuse_fd, iov, error || len == 0 ? 1 : 2) < 0 && errno != ENOENT) perror("reply");
}

static void attr(uint64_t node, struct fuse_attr *a) {
    memset(a, 0, sizeof *a);
    a->ino = node;
    a->nlink = node == FUSE_ROOT_ID ? 2 : 1;
    a->mode = node == FUSE_ROOT_ID ? (S_IFDIR | 0755) : (S_IFREG | 0444);
    a->size = node == FUSE_ROOT_ID ? 0 : FILE_SIZE;
    a->blksize = 4096;
}

static uint64_t pending[64];
static uint32_t pending_size[64];
static uint64_t pending_off[64];
static int npending;

static void answer_read(uint64_t unique, uint64_t off, uint32_t size) {
    size_t n = off >= FILE_SIZE ? 0 : FILE_SIZE - off;
    if (n > size) n = size;
    if (n > sizeof zeros) n = sizeof zeros;
    reply(unique, 0, zeros, n);
}

/* Handles one request; returns 1 when it was the first read left unanswered. */
static int serve_one(int released) {
    ssize_t n = read(fuse_fd, reqbuf, sizeof reqbuf);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == ENOENT) return 0;
        die("read /dev/fuse");
    }
    struct fuse_in_header *in = (void *)reqbuf;
    void *body = reqbuf + sizeof *in;
    switch (in->opcode) {
    case FUSE_INIT: {
        struct fuse_init_in *i = body;
        struct fuse_init_out o = {.major = FUSE_KERNEL_VERSION, .minor = FUSE_KERNEL_MINOR_VERSION,
                                  .max_readahead = i->max_readahead, .max_background = 16,
                                  .congestion_threshold = 12, .max_write = 4096, .time_gran = 1, .max_pages = 32};
        reply(in->unique, 0, &o, sizeof o);
        return 0;
    }
    case FUSE_LOOKUP:
        if (in->nodeid == FUSE_ROOT_ID && strcmp(body, "f") == 0) {
            struct fuse_entry_out e = {.nodeid = 2, .entry_valid = 3600, .attr_valid = 3600};
            attr(2, &e.attr);
            reply(in->unique, 0, &e, sizeof e);
        } else {
            reply(in->unique, -ENOENT, NULL, 0);
        }
        return 0;
    case FUSE_GETATTR: {
        struct fuse_attr_out o = {.attr_valid = 3600};
        attr(in->nodeid, &o.attr);
        reply(in->unique, 0, &o, sizeof o);
        return 0;
    }
    case FUSE_OPEN: {
        struct fuse_open_out o = {.fh = 1};
        reply(in->unique, 0, &o, sizeof o);
        return 0;
    }
    case FUSE_READ: {
        struct fuse_read_in *r = body;
        if (released || npending == 64) {
            answer_read(in->unique, r->offset, r->size);
            return 0;
        }
        pending[npending] = in->unique;
        pending_size[npending] = r->size;
        pending_off[npending] = r->offset;
        npending++;
        return npending == 1;
    }
    case FUSE_FLUSH:
    case FUSE_RELEASE:
        reply(in->unique, 0, NULL, 0);
        return 0;
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_INTERRUPT:
    case FUSE_DESTROY:
        return 0; /* no reply expected (an interrupted read is answered when released) */
    default:
        reply(in->unique, -ENOSYS, NULL, 0);
        return 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (unshare(CLONE_NEWNS) != 0) die("unshare(CLONE_NEWNS) (needs root)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make / private");
    fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fuse_fd < 0) die("open /dev/fuse");
    char opts[128];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0", fuse_fd);
    if (mount("nodesleuth-stuck", argv[1], "fuse", MS_NOSUID | MS_NODEV, opts) != 0) die("mount fuse");
    if (pipe2(go_pipe, O_CLOEXEC) != 0) die("pipe");
    pid_t server = getpid();
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(fuse_fd);
        close(go_pipe[1]);
        victim(argv[1], server);
    }
    close(go_pipe[0]);

    int released = 0, announced = 0;
    struct timespec first_read = {0};
    struct pollfd fds[2] = {{.fd = fuse_fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, 50) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (fds[0].revents & (POLLERR | POLLHUP)) die("fuse connection closed");
        if (fds[0].revents & POLLIN && serve_one(released)) {
            /* Thread 1 holds the lock: let thread 2 queue as a writer, then give it time to get there. */
            if (write(go_pipe[1], "g", 1) != 1) die("write");
            clock_gettime(CLOCK_MONOTONIC, &first_read);
        }
        if (npending && !announced && !released) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - first_read.tv_sec) * 1000 + (now.tv_nsec - first_read.tv_nsec) / 1000000 >= 300) {
                printf("STUCK %d\n", (int)child);
                announced = 1;
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            char line[64];
            ssize_t n = read(0, line, sizeof line - 1);
            if (n <= 0) {
                /* Closing /dev/fuse aborts the connection and fails the pending read; then the victim goes. */
                close(fuse_fd);
                kill(child, SIGKILL);
                waitpid(child, NULL, 0);
                return 0;
            }
            line[n] = 0;
            if (strncmp(line, "release", 7) == 0 && !released) {
                released = 1;
                for (int i = 0; i < npending; i++) answer_read(pending[i], pending_off[i], pending_size[i]);
                npending = 0;
                printf("RELEASED\n");
            }
        }
    }
}
