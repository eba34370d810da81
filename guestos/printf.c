/*
 * A small vsnprintf: %d %i %u %x %X %p %s %c %% with flags '-' and '0',
 * a width (or '*'), a precision for %s, and the length modifiers hh h l ll
 * z j. No floating point (the guest is built -mgeneral-regs-only).
 */
#include "guestos.h"

struct out {
	char *buf;
	size_t size;
	size_t len; /* what would have been written, like C's snprintf */
};

static void put(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void pad(struct out *o, char c, int n)
{
	while (n-- > 0)
		put(o, c);
}

struct spec {
	bool left;
	bool zero;
	int width;
	int prec; /* -1: none */
};

static void put_str(struct out *o, const char *s, const struct spec *sp)
{
	size_t n = 0;

	if (!s)
		s = "(null)";
	while (s[n] && (sp->prec < 0 || n < (size_t)sp->prec))
		n++;
	if (!sp->left)
		pad(o, ' ', sp->width - (int)n);
	for (size_t i = 0; i < n; i++)
		put(o, s[i]);
	if (sp->left)
		pad(o, ' ', sp->width - (int)n);
}

static void put_num(struct out *o, uint64_t v, bool negative, unsigned base, bool upper,
		    const char *prefix, const struct spec *sp)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	size_t start = o->len;
	int n = 0, extra = (negative ? 1 : 0) + (int)strlen(prefix);

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	if (!sp->left && !sp->zero)
		pad(o, ' ', sp->width - n - extra);
	if (negative)
		put(o, '-');
	while (*prefix)
		put(o, *prefix++);
	if (!sp->left && sp->zero)
		pad(o, '0', sp->width - n - extra);
	while (n)
		put(o, tmp[--n]);
	if (sp->left)
		pad(o, ' ', sp->width - (int)(o->len - start));
}

/* lenmod: 0 int, 1 long, 2 long long, -1 short, -2 char. */
static uint64_t arg_unsigned(va_list *ap, int lenmod)
{
	switch (lenmod) {
	case 2:
		return va_arg(*ap, unsigned long long);
	case 1:
		return va_arg(*ap, unsigned long);
	case -1:
		return (unsigned short)va_arg(*ap, unsigned int);
	case -2:
		return (unsigned char)va_arg(*ap, unsigned int);
	default:
		return va_arg(*ap, unsigned int);
	}
}

static int64_t arg_signed(va_list *ap, int lenmod)
{
	switch (lenmod) {
	case 2:
		return va_arg(*ap, long long);
	case 1:
		return va_arg(*ap, long);
	case -1:
		return (short)va_arg(*ap, int);
	case -2:
		return (signed char)va_arg(*ap, int);
	default:
		return va_arg(*ap, int);
	}
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap_in)
{
	struct out o = {.buf = buf, .size = size, .len = 0};
	va_list ap;

	va_copy(ap, ap_in);
	for (; *fmt; fmt++) {
		struct spec sp = {.prec = -1};
		int lenmod = 0;

		if (*fmt != '%') {
			put(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '-')
				sp.left = true;
			else if (*fmt == '0')
				sp.zero = true;
			else
				break;
		}
		if (*fmt == '*') {
			sp.width = va_arg(ap, int);
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			sp.width = sp.width * 10 + (*fmt++ - '0');
		if (*fmt == '.') {
			sp.prec = 0;
			fmt++;
			while (*fmt >= '0' && *fmt <= '9')
				sp.prec = sp.prec * 10 + (*fmt++ - '0');
		}
		for (;; fmt++) {
			if (*fmt == 'l')
				lenmod = lenmod == 1 ? 2 : 1;
			else if (*fmt == 'h')
				lenmod = lenmod == -1 ? -2 : -1;
			else if (*fmt == 'z' || *fmt == 'j')
				lenmod = 1; /* size_t, intmax_t: 64-bit on x86-64 */
			else
				break;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = arg_signed(&ap, lenmod);

			put_num(&o, v < 0 ? -(uint64_t)v : (uint64_t)v, v < 0, 10, false, "", &sp);
			break;
		}
		case 'u':
			put_num(&o, arg_unsigned(&ap, lenmod), false, 10, false, "", &sp);
			break;
		case 'x':
		case 'X':
			put_num(&o, arg_unsigned(&ap, lenmod), false, 16, *fmt == 'X', "", &sp);
			break;
		case 'p':
			put_num(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), false, 16, false, "0x",
				&sp);
			break;
		case 's':
			put_str(&o, va_arg(ap, const char *), &sp);
			break;
		case 'c': {
			char c[2] = {(char)va_arg(ap, int), '\0'};

			put_str(&o, c, &sp);
			break;
		}
		case '%':
			put(&o, '%');
			break;
		case '\0':
			fmt--; /* a lone '%' at the end: let the loop end */
			break;
		default:
			put(&o, '%');
			put(&o, *fmt);
			break;
		}
	}
	va_end(ap);
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}
