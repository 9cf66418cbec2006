// expect: ok
// stdout: reversed: xedoc-D
// stdout: words: 4
// stdout: upper: SANDBOXED C PROGRAM
//
// C strings: char arrays ending in '\0', with <string.h> and <ctype.h>.
#include <ctype.h>
#include <stdio.h>
#include <string.h>

static void reverse(char *s) {
    for (size_t i = 0, j = strlen(s); i + 1 < j; i++, j--) {
        char t = s[i];
        s[i] = s[j - 1];
        s[j - 1] = t;
    }
}

static int count_words(const char *s) {
    int words = 0, in_word = 0;
    for (; *s; s++) {
        if (isspace((unsigned char)*s)) in_word = 0;
        else if (!in_word) { in_word = 1; words++; }
    }
    return words;
}

int main(void) {
    char name[] = "D-codex";
    reverse(name);
    printf("reversed: %s\n", name);

    const char *sentence = "  a sandboxed   C program ";
    printf("words: %d\n", count_words(sentence));

    char upper[64];
    snprintf(upper, sizeof upper, "%s", "sandboxed C program");
    for (char *p = upper; *p; p++) *p = (char)toupper((unsigned char)*p);
    printf("upper: %s\n", upper);

    char greeting[32];
    int n = snprintf(greeting, sizeof greeting, "%s, %s!", "Hello", "strings");
    printf("%s (%d chars, strcmp with itself = %d)\n", greeting, n, strcmp(greeting, greeting));
    return 0;
}
