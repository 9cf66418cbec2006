// expect: ok
// stdout: after swap: a = 2, b = 1
// stdout: list: 3 -> 2 -> 1
// stdout: oldest: Ada (36)
//
// Pointers and structs: pass by pointer, a singly linked list, an array of
// structs walked with a pointer.
#include <stdio.h>
#include <stdlib.h>

struct node {
    int value;
    struct node *next;
};

struct person {
    const char *name;
    int age;
};

static void swap(int *x, int *y) {
    int t = *x;
    *x = *y;
    *y = t;
}

// Push onto the front of the list: the caller's head pointer changes, so pass its address.
static void push(struct node **head, int value) {
    struct node *n = malloc(sizeof *n);
    if (!n) exit(1);
    n->value = value;
    n->next = *head;
    *head = n;
}

int main(void) {
    int a = 1, b = 2;
    swap(&a, &b);
    printf("after swap: a = %d, b = %d\n", a, b);

    struct node *head = NULL;
    for (int i = 1; i <= 3; i++) push(&head, i);
    printf("list:");
    for (struct node *n = head; n; n = n->next) printf(n == head ? " %d" : " -> %d", n->value);
    printf("\n");
    while (head) {  // free every node
        struct node *next = head->next;
        free(head);
        head = next;
    }

    struct person people[] = {{"Grace", 35}, {"Ada", 36}, {"Linus", 21}};
    const struct person *oldest = &people[0];
    for (const struct person *p = people; p < people + 3; p++)
        if (p->age > oldest->age) oldest = p;
    printf("oldest: %s (%d)\n", oldest->name, oldest->age);
    return 0;
}
