/* hk_parse_size / hk_format_size: what a user can write in hk.conf. */
#include "node_test.h"
#include <errno.h>
#include <string.h>

#include "node.h"

static uint64_t parse_ok(const char *s)
{
	uint64_t v = 0xdeadbeef;
	int ret = hk_parse_size(s, &v);

	cr_assert_eq(ret, 0, "hk_parse_size(\"%s\") = %d, want 0", s, ret);
	return v;
}

static void parse_bad(const char *s, int want)
{
	uint64_t v = 42;
	int ret = hk_parse_size(s, &v);

	cr_assert_eq(ret, want, "hk_parse_size(\"%s\") = %d, want %d", s, ret, want);
	cr_assert_eq(v, 42, "\"%s\" wrote the output on failure", s);
}

NODE_TEST(size, plain_and_suffixed)
{
	cr_assert_eq(parse_ok("0"), 0);
	cr_assert_eq(parse_ok("512"), 512);
	cr_assert_eq(parse_ok("512B"), 512);
	cr_assert_eq(parse_ok("64K"), 64ull << 10);
	cr_assert_eq(parse_ok("64k"), 64ull << 10);
	cr_assert_eq(parse_ok("64KiB"), 64ull << 10);
	cr_assert_eq(parse_ok("64kib"), 64ull << 10);
	cr_assert_eq(parse_ok("64KB"), 64ull << 10);
	cr_assert_eq(parse_ok("256M"), 256ull << 20);
	cr_assert_eq(parse_ok("256MiB"), 256ull << 20);
	cr_assert_eq(parse_ok("1G"), 1ull << 30);
	cr_assert_eq(parse_ok("1 GiB"), 1ull << 30);
	cr_assert_eq(parse_ok("4T"), 4ull << 40);
	cr_assert_eq(parse_ok("2P"), 2ull << 50);
	cr_assert_eq(parse_ok("15E"), 15ull << 60);
	cr_assert_eq(parse_ok("18446744073709551615"), UINT64_MAX);
}

NODE_TEST(size, exact_decimals)
{
	cr_assert_eq(parse_ok("1.5G"), 1610612736ull);
	cr_assert_eq(parse_ok("1.5 GiB"), 1610612736ull);
	cr_assert_eq(parse_ok("0.5K"), 512);
	cr_assert_eq(parse_ok("0.25M"), 256ull << 10);
	cr_assert_eq(parse_ok("2.0"), 2);
	cr_assert_eq(parse_ok("1.000000000000000000000G"), 1ull << 30);
}

NODE_TEST(size, rejects_garbage)
{
	parse_bad("", -EINVAL);
	parse_bad("abc", -EINVAL);
	parse_bad("-1", -EINVAL);
	parse_bad("-1G", -EINVAL);
	parse_bad("+1", -EINVAL);
	parse_bad(" 1G", -EINVAL);
	parse_bad("1G ", -EINVAL);
	parse_bad("1Q", -EINVAL);
	parse_bad("1GG", -EINVAL);
	parse_bad("1Gi", -EINVAL);
	parse_bad("1iB", -EINVAL);
	parse_bad("1GBx", -EINVAL);
	parse_bad("0x10", -EINVAL);
	parse_bad("1e6", -EINVAL);
	parse_bad("1.", -EINVAL);
	parse_bad(".5G", -EINVAL);
	parse_bad("1.G", -EINVAL);
	parse_bad("1,5G", -EINVAL);
	parse_bad("G", -EINVAL);
}

NODE_TEST(size, rejects_fractions_of_a_byte)
{
	parse_bad("1.5", -EINVAL);
	parse_bad("0.1K", -EINVAL);
	parse_bad("1.0000000000000000000001G", -EINVAL);
}

NODE_TEST(size, rejects_overflow)
{
	parse_bad("18446744073709551616", -ERANGE);
	parse_bad("99999999999999999999999", -ERANGE);
	parse_bad("16E", -ERANGE);
	parse_bad("17179869184G", -ERANGE);
	parse_bad("16.5E", -ERANGE);
	cr_assert_eq(parse_ok("15.5E"), 31ull << 59);
}

static void fmt_is(uint64_t v, const char *want)
{
	char buf[32];

	cr_assert_str_eq(hk_format_size(v, buf, sizeof(buf)), want);
}

NODE_TEST(size, format)
{
	fmt_is(0, "0 B");
	fmt_is(512, "512 B");
	fmt_is(1023, "1023 B");
	fmt_is(1024, "1 KiB");
	fmt_is(64ull << 20, "64 MiB");
	fmt_is(1610612736ull, "1.5 GiB");
	fmt_is((1ull << 30) + (1ull << 30) / 4, "1.25 GiB");
	fmt_is((1ull << 30) - 1, "1 GiB");
	fmt_is(4ull << 40, "4 TiB");
	fmt_is(UINT64_MAX, "16 EiB");
}

NODE_TEST(size, format_round_trips_when_exact)
{
	static const uint64_t vals[] = {512, 4096, 64ull << 20, 1610612736ull, 5ull << 40};
	char buf[32];
	size_t i;

	for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		cr_assert_eq(parse_ok(hk_format_size(vals[i], buf, sizeof(buf))), vals[i]);
}

NODE_TEST(size, format_truncates_to_buffer)
{
	char buf[4];

	cr_assert_str_eq(hk_format_size(1610612736ull, buf, sizeof(buf)), "1.5");
}
