/*
 * PVH ELF loader.  The image is untrusted input: every header field is
 * checked against the file size and guest RAM before a single byte is
 * written to the guest, so a malformed kernel leaves memory untouched and
 * yields one line saying what is wrong.
 */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hyperkernel.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PVH_MAX_PHDRS 64

/* struct hvm_start_info, version 1: layout fixed by the PVH ABI (Xen's
 * public/arch-x86/hvm/start_info.h). */
struct pvh_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
} __attribute__((packed));

struct pvh_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
} __attribute__((packed));

#define PVH_START_MAGIC 0x336ec578u
#define E820_RAM 1
#define E820_RESERVED 2

/* A program header, whichever ELF class it came from. */
struct seg {
	uint32_t type, flags;
	uint64_t offset, paddr, filesz, memsz;
};

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		snprintf(err, errlen, "kernel: " __VA_ARGS__);                                     \
		return -EINVAL;                                                                    \
	} while (0)

/* True when [off, off+len) lies inside a file of size bytes. */
static bool in_file(uint64_t off, uint64_t len, size_t size)
{
	return off <= size && len <= size - off;
}

static int read_phdrs(const uint8_t *img, size_t size, struct seg *segs, unsigned *nseg,
		      char *err, size_t errlen)
{
	uint64_t phoff;
	unsigned phnum, phentsize, want;
	bool is64;

	if (size < EI_NIDENT || memcmp(img, ELFMAG, SELFMAG))
		FAIL("not an ELF file");
	if (img[EI_DATA] != ELFDATA2LSB)
		FAIL("not a little-endian ELF");
	is64 = img[EI_CLASS] == ELFCLASS64;
	if (!is64 && img[EI_CLASS] != ELFCLASS32)
		FAIL("unknown ELF class %u", img[EI_CLASS]);

	if (is64) {
		Elf64_Ehdr eh;

		if (size < sizeof(eh))
			FAIL("truncated ELF header (%zu bytes)", size);
		memcpy(&eh, img, sizeof(eh));
		if (eh.e_machine != EM_X86_64)
			FAIL("ELF64 machine %u is not x86-64", eh.e_machine);
		if (eh.e_type != ET_EXEC)
			FAIL("ELF type %u is not an executable", eh.e_type);
		phoff = eh.e_phoff;
		phnum = eh.e_phnum;
		phentsize = eh.e_phentsize;
		want = sizeof(Elf64_Phdr);
	} else {
		Elf32_Ehdr eh;

		if (size < sizeof(eh))
			FAIL("truncated ELF header (%zu bytes)", size);
		memcpy(&eh, img, sizeof(eh));
		if (eh.e_machine != EM_386 && eh.e_machine != EM_X86_64)
			FAIL("ELF32 machine %u is not x86", eh.e_machine);
		if (eh.e_type != ET_EXEC)
			FAIL("ELF type %u is not an executable", eh.e_type);
		phoff = eh.e_phoff;
		phnum = eh.e_phnum;
		phentsize = eh.e_phentsize;
		want = sizeof(Elf32_Phdr);
	}
	if (phnum == 0)
		FAIL("no program headers");
	if (phnum > PVH_MAX_PHDRS)
		FAIL("%u program headers (at most %d)", phnum, PVH_MAX_PHDRS);
	if (phentsize != want)
		FAIL("program header size %u, expected %u", phentsize, want);
	if (!in_file(phoff, (uint64_t)phnum * phentsize, size))
		FAIL("program headers at offset %llu run past the end of the file (%zu bytes)",
		     (unsigned long long)phoff, size);

	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *p = img + phoff + (uint64_t)i * phentsize;

		if (is64) {
			Elf64_Phdr ph;

			memcpy(&ph, p, sizeof(ph));
			segs[i] = (struct seg){ph.p_type, ph.p_flags, ph.p_offset,
					       ph.p_paddr,  ph.p_filesz, ph.p_memsz};
		} else {
			Elf32_Phdr ph;

			memcpy(&ph, p, sizeof(ph));
			segs[i] = (struct seg){ph.p_type, ph.p_flags, ph.p_offset,
					       ph.p_paddr,  ph.p_filesz, ph.p_memsz};
		}
	}
	*nseg = phnum;
	return 0;
}

/* Find XEN_ELFNOTE_PHYS32_ENTRY among the notes of one PT_NOTE segment. */
static int find_pvh_note(const uint8_t *img, size_t size, const struct seg *s, uint64_t *entry,
			 char *err, size_t errlen)
{
	uint64_t off = 0;

	if (!in_file(s->offset, s->filesz, size))
		FAIL("note segment at offset %llu runs past the end of the file",
		     (unsigned long long)s->offset);

	while (s->filesz - off >= 12) {
		const uint8_t *n = img + s->offset + off;
		uint32_t namesz, descsz, type;
		uint64_t name_al, desc_al;

		memcpy(&namesz, n, 4);
		memcpy(&descsz, n + 4, 4);
		memcpy(&type, n + 8, 4);
		name_al = ((uint64_t)namesz + 3) & ~3ull;
		desc_al = ((uint64_t)descsz + 3) & ~3ull;
		if (name_al + desc_al > s->filesz - off - 12)
			FAIL("truncated ELF note at file offset %llu",
			     (unsigned long long)(s->offset + off));
		if (namesz == 4 && !memcmp(n + 12, "Xen", 4) && type == XEN_ELFNOTE_PHYS32_ENTRY) {
			if (descsz == 4) {
				uint32_t e32;

				memcpy(&e32, n + 12 + name_al, 4);
				*entry = e32;
			} else if (descsz == 8) {
				memcpy(entry, n + 12 + name_al, 8);
			} else {
				FAIL("PVH entry note has a %u-byte descriptor", descsz);
			}
			return 1;
		}
		off += 12 + name_al + desc_al;
	}
	return 0;
}

static int check_image(struct hk_mem *mem, const uint8_t *img, size_t size, struct seg *segs,
		       unsigned nseg, struct hk_boot_info *bi, char *err, size_t errlen)
{
	uint64_t entry = 0, lo = UINT64_MAX, hi = 0;
	bool have_entry = false, entry_ok = false;
	unsigned nload = 0;

	for (unsigned i = 0; i < nseg; i++) {
		struct seg *s = &segs[i];
		int r;

		if (s->type == PT_NOTE && !have_entry) {
			r = find_pvh_note(img, size, s, &entry, err, errlen);
			if (r < 0)
				return r;
			have_entry = r == 1;
		}
		if (s->type != PT_LOAD || s->memsz == 0)
			continue;
		nload++;
		if (s->filesz > s->memsz)
			FAIL("segment %u: file size %llu exceeds memory size %llu", i,
			     (unsigned long long)s->filesz, (unsigned long long)s->memsz);
		if (!in_file(s->offset, s->filesz, size))
			FAIL("segment %u: %llu bytes at offset %llu run past the end of the file (%zu bytes)",
			     i, (unsigned long long)s->filesz, (unsigned long long)s->offset, size);
		if (s->paddr < HK_GPA_KERNEL_MIN)
			FAIL("segment %u: load address 0x%llx is below 1 MiB (boot structures live there)",
			     i, (unsigned long long)s->paddr);
		if (!hk_mem_gpa(mem, s->paddr, s->memsz))
			FAIL("segment %u: [0x%llx, +0x%llx) lies outside guest RAM", i,
			     (unsigned long long)s->paddr, (unsigned long long)s->memsz);
		for (unsigned j = 0; j < i; j++) {
			const struct seg *t = &segs[j];

			if (t->type != PT_LOAD || t->memsz == 0)
				continue;
			if (s->paddr < t->paddr + t->memsz && t->paddr < s->paddr + s->memsz)
				FAIL("segments %u and %u overlap at 0x%llx", j, i,
				     (unsigned long long)(s->paddr > t->paddr ? s->paddr : t->paddr));
		}
		if (s->paddr < lo)
			lo = s->paddr;
		if (s->paddr + s->memsz > hi)
			hi = s->paddr + s->memsz;
	}
	if (!nload)
		FAIL("no loadable segments");
	if (!have_entry)
		FAIL("no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); only PVH kernels boot here");

	for (unsigned i = 0; i < nseg; i++) {
		const struct seg *s = &segs[i];

		if (s->type == PT_LOAD && (s->flags & PF_X) && entry >= s->paddr &&
		    entry - s->paddr < s->memsz)
			entry_ok = true;
	}
	if (!entry_ok || entry >= (1ull << 32))
		FAIL("PVH entry 0x%llx is not inside a loaded executable segment below 4 GiB",
		     (unsigned long long)entry);

	bi->entry = entry;
	bi->image_start = lo;
	bi->image_end = hi;
	return 0;
}

static int write_boot_info(struct hk_mem *mem, const char *cmdline, char *err, size_t errlen)
{
	struct pvh_memmap_entry map[4];
	struct hk_mem_range r[2];
	unsigned nr = hk_mem_ranges(mem, r), n = 0;
	size_t clen = strlen(cmdline);
	struct pvh_start_info si;

	/* Range 0 always starts at 0 and is at least 64 MiB long. */
	map[n++] = (struct pvh_memmap_entry){0, HK_GPA_LEGACY_HOLE, E820_RAM, 0};
	map[n++] = (struct pvh_memmap_entry){HK_GPA_LEGACY_HOLE,
					     HK_GPA_KERNEL_MIN - HK_GPA_LEGACY_HOLE, E820_RESERVED, 0};
	map[n++] = (struct pvh_memmap_entry){HK_GPA_KERNEL_MIN, r[0].len - HK_GPA_KERNEL_MIN,
					     E820_RAM, 0};
	if (nr > 1)
		map[n++] = (struct pvh_memmap_entry){r[1].gpa, r[1].len, E820_RAM, 0};

	si = (struct pvh_start_info){
		.magic = PVH_START_MAGIC,
		.version = 1,
		.cmdline_paddr = HK_GPA_CMDLINE,
		.memmap_paddr = HK_GPA_MEMMAP,
		.memmap_entries = n,
	};
	if (hk_mem_write(mem, HK_GPA_START_INFO, &si, sizeof(si)) ||
	    hk_mem_write(mem, HK_GPA_MEMMAP, map, n * sizeof(map[0])) ||
	    hk_mem_write(mem, HK_GPA_CMDLINE, cmdline, clen + 1)) {
		snprintf(err, errlen, "cannot write boot information into guest memory");
		return -EFAULT;
	}
	return 0;
}

int hk_pvh_load(struct hk_mem *mem, const void *image, size_t size, const char *cmdline,
		struct hk_boot_info *bi, char *err, size_t errlen)
{
	const uint8_t *img = image;
	struct seg segs[PVH_MAX_PHDRS];
	unsigned nseg = 0;
	int ret;

	if (!cmdline)
		cmdline = "";
	if (strlen(cmdline) >= HK_CMDLINE_MAX) {
		snprintf(err, errlen, "kernel command line is %zu bytes (at most %u)",
			 strlen(cmdline), HK_CMDLINE_MAX - 1);
		return -E2BIG;
	}
	ret = read_phdrs(img, size, segs, &nseg, err, errlen);
	if (ret)
		return ret;
	ret = check_image(mem, img, size, segs, nseg, bi, err, errlen);
	if (ret)
		return ret;

	for (unsigned i = 0; i < nseg; i++) {
		const struct seg *s = &segs[i];
		uint8_t *dst;

		if (s->type != PT_LOAD || s->memsz == 0)
			continue;
		dst = hk_mem_gpa(mem, s->paddr, s->memsz); /* checked above */
		memcpy(dst, img + s->offset, s->filesz);
		/* Explicit: a reused frame (guest reboot) is not zero. */
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	return write_boot_info(mem, cmdline, err, errlen);
}

int hk_pvh_probe(struct hk_mem *mem, const void *image, size_t size, struct hk_boot_info *bi,
		 char *err, size_t errlen)
{
	struct seg segs[PVH_MAX_PHDRS];
	unsigned nseg = 0;
	int ret;

	ret = read_phdrs(image, size, segs, &nseg, err, errlen);
	if (ret)
		return ret;
	return check_image(mem, image, size, segs, nseg, bi, err, errlen);
}
