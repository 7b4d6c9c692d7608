/*
 * Test helper for the memory collector (exporter/tests/memory_live.rs), built by the test with `cc`.
 *
 *   madvise free|dontneed [MiB]
 *
 * Maps MiB (default 256) of private anonymous memory, writes every page, prints "TOUCHED", then waits for a line
 * on stdin; releases the whole mapping with madvise(MADV_FREE) or madvise(MADV_DONTNEED), prints "RELEASED",
 * and waits until stdin closes (the test holding the pipe exits or drops it). Errors go to stderr with exit 1.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_FREE
#define MADV_FREE 8
#endif

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "free") != 0 && strcmp(argv[1], "dontneed") != 0)) {
        fprintf(stderr, "usage: %s free|dontneed [MiB]\n", argv[0]);
        return 2;
    }
    size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
    size_t len = mib << 20;
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* Keep the test's arithmetic simple: small pages, so MADV_FREE never has to split a huge page. */
    madvise(p, len, MADV_NOHUGEPAGE);
    for (size_t off = 0; off < len; off += (size_t)page) p[off] = 1;
    printf("TOUCHED\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;
    int advice = strcmp(argv[1], "free") == 0 ? MADV_FREE : MADV_DONTNEED;
    if (madvise(p, len, advice) != 0) {
        perror("madvise");
        return 1;
    }
    printf("RELEASED\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
