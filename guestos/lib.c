/*
 * The few C library functions a freestanding build still needs: gcc may
 * emit calls to memset/memcpy for aggregate copies even with -ffreestanding.
 * Plain byte loops: nothing here is hot (memtest uses its own word loops).
 * meson.build passes -fno-tree-loop-distribute-patterns so gcc does not turn
 * these loops back into calls to themselves.
 */
#include "guestos.h"

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

int strcmp(const char *a, const char *b)
{
	return strncmp(a, b, SIZE_MAX);
}
