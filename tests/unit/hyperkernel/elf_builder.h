/* Builds small PVH ELF images in memory for the loader tests. */
#ifndef HK_ELF_BUILDER_H
#define HK_ELF_BUILDER_H

#include <elf.h>
#include <stdint.h>
#include <string.h>

#define EB_CODE_OFF 0x200
#define EB_CODE_LEN 0x40
#define EB_NOTE_OFF 0x100
#define EB_LOAD     0x100000ull

/* Xen note: namesz 4 "Xen\0", descsz 4, type 18, entry. */
struct eb_note {
	uint32_t namesz, descsz, type;
	char name[4];
	uint32_t entry;
};

struct eb_image {
	uint8_t buf[EB_CODE_OFF + EB_CODE_LEN];
	Elf64_Ehdr *eh;
	Elf64_Phdr *load; /* phdr 0 */
	Elf64_Phdr *note; /* phdr 1 */
	Elf64_Phdr *extra; /* phdr 2, PT_NULL unless a test sets it */
	struct eb_note *xen;
};

/* A valid 3-phdr ELF64: code at 1 MiB (filesz 0x40, memsz 0x2000 of which
 * the rest is bss), a PVH note with entry 1 MiB + 0x10. */
static inline void eb_build(struct eb_image *im)
{
	memset(im, 0, sizeof(*im));
	im->eh = (Elf64_Ehdr *)im->buf;
	im->load = (Elf64_Phdr *)(im->buf + sizeof(Elf64_Ehdr));
	im->note = im->load + 1;
	im->extra = im->load + 2;
	im->xen = (struct eb_note *)(im->buf + EB_NOTE_OFF);

	memcpy(im->eh->e_ident, ELFMAG, SELFMAG);
	im->eh->e_ident[EI_CLASS] = ELFCLASS64;
	im->eh->e_ident[EI_DATA] = ELFDATA2LSB;
	im->eh->e_ident[EI_VERSION] = EV_CURRENT;
	im->eh->e_type = ET_EXEC;
	im->eh->e_machine = EM_X86_64;
	im->eh->e_version = EV_CURRENT;
	im->eh->e_entry = EB_LOAD;
	im->eh->e_phoff = sizeof(Elf64_Ehdr);
	im->eh->e_ehsize = sizeof(Elf64_Ehdr);
	im->eh->e_phentsize = sizeof(Elf64_Phdr);
	im->eh->e_phnum = 3;

	*im->load = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_X,
				 .p_offset = EB_CODE_OFF, .p_vaddr = EB_LOAD, .p_paddr = EB_LOAD,
				 .p_filesz = EB_CODE_LEN, .p_memsz = 0x2000, .p_align = 0x1000};
	*im->note = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = EB_NOTE_OFF,
				 .p_filesz = sizeof(struct eb_note), .p_align = 4};
	*im->xen = (struct eb_note){4, 4, 18, "Xen", (uint32_t)EB_LOAD + 0x10};
	for (unsigned i = 0; i < EB_CODE_LEN; i++)
		im->buf[EB_CODE_OFF + i] = (uint8_t)(0xa0 + i);
}

#endif
