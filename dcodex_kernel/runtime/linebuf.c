/* Linked into every C and C++ program DCodeX builds.
 *
 * 1. Make stdout line-buffered even though it is a pipe, so what the program prints reaches the
 *    notebook line by line while it runs. stdin too: glibc flushes a line-buffered stdout before
 *    it reads a line-buffered (not a fully buffered) stdin, so `printf("a? "); scanf(...)` shows
 *    its prompt before it waits for the answer, as on a terminal.
 * 2. Tell the sandbox when an allocation fails. Under an address-space limit malloc returns
 *    NULL and the program usually crashes on it a moment later (SIGSEGV): one byte on the
 *    launcher's note fd lets the engine say "memory limit" instead of "segmentation fault".
 *    The wrappers are weak, so a program that defines its own malloc keeps it, and they only
 *    pass through to glibc's allocator.
 */
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#define DCODEX_NOTE_FD 1023

#ifdef __cplusplus /* g++ compiles this file as C++ */
extern "C" {
#endif

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

__attribute__((constructor)) static void dcodex_line_buffer_stdout(void) {
    setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
    setvbuf(stdin, NULL, _IOLBF, BUFSIZ);
}

static void dcodex_note_failed_allocation(void) {
    static int noted;
    if (!noted) {
        noted = 1;
        if (write(DCODEX_NOTE_FD, "m", 1) < 0) {}
    }
}

__attribute__((weak)) void *malloc(size_t size) {
    void *p = __libc_malloc(size);
    if (!p && size) dcodex_note_failed_allocation();
    return p;
}

__attribute__((weak)) void *calloc(size_t n, size_t size) {
    void *p = __libc_calloc(n, size);
    if (!p && n && size) dcodex_note_failed_allocation();
    return p;
}

__attribute__((weak)) void *realloc(void *old, size_t size) {
    void *p = __libc_realloc(old, size);
    if (!p && size) dcodex_note_failed_allocation();
    return p;
}

#ifdef __cplusplus
}
#endif
