/* The PVH loader against valid and malformed images. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "elf_builder.h"
#include "hyperkernel.h"

static struct hk_mem *mem;
static struct eb_image im;
static struct hk_boot_info bi;
static char err[256];

static void setup(void)
{
	cr_assert_eq(hk_mem_create(64ull << 20, 0, &mem, err, sizeof(err)), 0, "%s", err);
	eb_build(&im);
	err[0] = 0;
}

static void teardown(void)
{
	hk_mem_destroy(mem);
}

TestSuite(pvh, .init = setup, .fini = teardown);

static int load(const char *cmdline)
{
	return hk_pvh_load(mem, im.buf, sizeof(im.buf), cmdline, &bi, err, sizeof(err));
}

/* Loader must refuse before writing: no page of the guest gets placed. */
static void assert_refused(const char *needle)
{
	struct hk_mem_stats st;

	cr_assert_neq(load("x"), 0, "image was accepted");
	cr_assert(strstr(err, needle), "error '%s' does not mention '%s'", err, needle);
	cr_assert(!strchr(err, '\n'), "error is not one line: '%s'", err);
	hk_mem_get_stats(mem, &st);
	cr_assert_eq(st.resident_pages, 0, "a refused image wrote guest memory");
}

Test(pvh, loads_segments_bss_and_boot_info)
{
	uint8_t got[0x2000];
	uint32_t magic, nent;
	uint64_t cmd_pa, map_pa;
	char cmd[32];
	struct {
		uint64_t addr, size;
		uint32_t type, res;
	} map[4];

	cr_assert_eq(load("memtest size=1M"), 0, "%s", err);
	cr_assert_eq(bi.entry, EB_LOAD + 0x10);
	cr_assert_eq(bi.image_start, EB_LOAD);
	cr_assert_eq(bi.image_end, EB_LOAD + 0x2000);

	cr_assert_eq(hk_mem_read(mem, EB_LOAD, got, sizeof(got)), 0);
	cr_assert_arr_eq(got, im.buf + EB_CODE_OFF, EB_CODE_LEN);
	for (unsigned i = EB_CODE_LEN; i < sizeof(got); i++)
		cr_assert_eq(got[i], 0, "bss byte %u not zero", i);

	hk_mem_read(mem, HK_GPA_START_INFO, &magic, 4);
	cr_assert_eq(magic, 0x336ec578u);
	/* hvm_start_info v1: cmdline_paddr at 24, memmap_paddr at 40, entries at 48 */
	hk_mem_read(mem, HK_GPA_START_INFO + 24, &cmd_pa, 8);
	hk_mem_read(mem, HK_GPA_START_INFO + 40, &map_pa, 8);
	hk_mem_read(mem, HK_GPA_START_INFO + 48, &nent, 4);
	hk_mem_read(mem, cmd_pa, cmd, sizeof(cmd));
	cr_assert_str_eq(cmd, "memtest size=1M");
	cr_assert_eq(nent, 3);
	hk_mem_read(mem, map_pa, map, sizeof(map[0]) * nent);
	cr_assert_eq(map[0].addr, 0);
	cr_assert_eq(map[0].type, 1);
	cr_assert_eq(map[1].type, 2, "legacy hole must be reserved");
	cr_assert_eq(map[2].addr, 0x100000);
	cr_assert_eq(map[2].addr + map[2].size, 64ull << 20);
}

Test(pvh, memory_map_has_high_range_above_4g)
{
	struct hk_mem *big;
	uint32_t nent;
	struct {
		uint64_t addr, size;
		uint32_t type, res;
	} map[4];

	cr_assert_eq(hk_mem_create(6ull << 30, 0, &big, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(hk_pvh_load(big, im.buf, sizeof(im.buf), "", &bi, err, sizeof(err)), 0, "%s",
		     err);
	hk_mem_read(big, HK_GPA_START_INFO + 48, &nent, 4);
	cr_assert_eq(nent, 4);
	hk_mem_read(big, HK_GPA_MEMMAP, map, sizeof(map));
	cr_assert_eq(map[2].addr + map[2].size, 3ull << 30, "low RAM must stop at the MMIO hole");
	cr_assert_eq(map[3].addr, 4ull << 30);
	cr_assert_eq(map[3].size, 3ull << 30);
	hk_mem_destroy(big);
}

Test(pvh, elf32_image_loads)
{
	struct {
		Elf32_Ehdr eh;
		Elf32_Phdr ph[2];
		struct eb_note note;
		uint8_t code[16];
	} __attribute__((packed)) e32 = {0};

	memcpy(e32.eh.e_ident, ELFMAG, SELFMAG);
	e32.eh.e_ident[EI_CLASS] = ELFCLASS32;
	e32.eh.e_ident[EI_DATA] = ELFDATA2LSB;
	e32.eh.e_type = ET_EXEC;
	e32.eh.e_machine = EM_386;
	e32.eh.e_phoff = sizeof(Elf32_Ehdr);
	e32.eh.e_phentsize = sizeof(Elf32_Phdr);
	e32.eh.e_phnum = 2;
	e32.ph[0] = (Elf32_Phdr){.p_type = PT_LOAD, .p_flags = PF_X | PF_R,
				 .p_offset = offsetof(typeof(e32), code), .p_paddr = 0x200000,
				 .p_filesz = 16, .p_memsz = 16};
	e32.ph[1] = (Elf32_Phdr){.p_type = PT_NOTE, .p_offset = offsetof(typeof(e32), note),
				 .p_filesz = sizeof(struct eb_note)};
	e32.note = (struct eb_note){4, 4, 18, "Xen", 0x200004};
	memset(e32.code, 0x90, sizeof(e32.code));
	cr_assert_eq(hk_pvh_load(mem, &e32, sizeof(e32), "", &bi, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(bi.entry, 0x200004);
}

Test(pvh, every_truncation_is_refused)
{
	/* Every prefix of a valid image is invalid somewhere; none may crash
	 * the loader or be accepted. */
	for (size_t len = 0; len < sizeof(im.buf); len++) {
		int r = hk_pvh_load(mem, im.buf, len, "", &bi, err, sizeof(err));

		cr_assert_neq(r, 0, "truncated image of %zu bytes accepted", len);
	}
}

Test(pvh, not_elf)
{
	im.buf[1] = 'X';
	assert_refused("not an ELF");
}

Test(pvh, wrong_machine)
{
	im.eh->e_machine = EM_AARCH64;
	assert_refused("not x86-64");
}

Test(pvh, overlapping_segments)
{
	*im.extra = *im.load;
	im.extra->p_paddr = EB_LOAD + 0x1000; /* inside the first one's bss */
	assert_refused("overlap");
}

Test(pvh, entry_outside_memory)
{
	im.xen->entry = 0xfffff000u;
	assert_refused("entry");
}

Test(pvh, entry_outside_executable_segment)
{
	im.load->p_flags = PF_R;
	assert_refused("entry");
}

Test(pvh, huge_memsz)
{
	im.load->p_memsz = 1ull << 60;
	assert_refused("outside guest RAM");
}

Test(pvh, memsz_wraps_address_space)
{
	im.load->p_paddr = UINT64_MAX - 0xfff;
	assert_refused("outside guest RAM");
}

Test(pvh, filesz_above_memsz)
{
	im.load->p_filesz = 0x3000;
	assert_refused("exceeds memory size");
}

Test(pvh, segment_past_end_of_file)
{
	im.load->p_offset = UINT64_MAX - 8;
	assert_refused("past the end of the file");
}

Test(pvh, phdrs_past_end_of_file)
{
	im.eh->e_phoff = UINT64_MAX - 100;
	assert_refused("program headers");
}

Test(pvh, too_many_phdrs)
{
	im.eh->e_phnum = 1000;
	assert_refused("program headers");
}

Test(pvh, below_one_mib)
{
	im.load->p_paddr = 0x6000;
	assert_refused("below 1 MiB");
}

Test(pvh, no_pvh_note)
{
	im.xen->type = 17;
	assert_refused("no PVH entry note");
}

Test(pvh, truncated_note)
{
	im.xen->descsz = 0x7fffffff;
	assert_refused("note");
}

Test(pvh, no_loadable_segment)
{
	im.load->p_type = PT_NULL;
	assert_refused("no loadable segments");
}

Test(pvh, command_line_too_long)
{
	char *big = malloc(HK_CMDLINE_MAX + 1);

	memset(big, 'a', HK_CMDLINE_MAX);
	big[HK_CMDLINE_MAX] = 0;
	cr_assert_eq(load(big), -E2BIG);
	cr_assert(strstr(err, "command line"), "%s", err);
	free(big);
}
