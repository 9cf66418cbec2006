/* Linked into every C and C++ program DCodeX builds: make stdout line-buffered even though it
 * is a pipe, so what the program prints reaches the notebook line by line while it runs. */
#include <stdio.h>

__attribute__((constructor)) static void dcodex_line_buffer_stdout(void) {
    setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
}
