/*
 * Internal to storage/disk*.c: the disk object and the backend table.
 * disk.c opens and closes disks, disk_io.c owns the ring, the completion
 * thread and the request state machine; disk_file.c and disk_blk.c only
 * know how to open, size and prepare their kind of backing object.
 */
#ifndef HK_STORAGE_DISK_INTERNAL_H
#define HK_STORAGE_DISK_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <sys/stat.h>

#include "disk.h"

/*
 * A backend.  Tables carry their own size so fields can be added without
 * breaking backends built against an older layout.
 */
struct hk_disk_ops {
	size_t size; /* sizeof(struct hk_disk_ops) */
	const char *name;
	bool (*match)(mode_t mode); /* st_mode of the path */
	/*
	 * Open d->path into d->fd with these open(2) flags (O_RDWR, O_CLOEXEC,
	 * maybe O_DIRECT); -errno without a message, so the caller can retry
	 * without O_DIRECT.  May set d->created.
	 */
	int (*open)(struct hk_disk *d, const struct hk_disk_config *cfg, int flags);
	/* Bytes the backing object holds now. */
	int (*size_of)(struct hk_disk *d, uint64_t *size, char *err, size_t errlen);
	/* O_DIRECT alignment for offsets, lengths and buffer addresses. */
	int (*block_size)(struct hk_disk *d, unsigned *bs, char *err, size_t errlen);
	/* cfg->create: make [0, size) exist and be allocated.  NULL: nothing to do. */
	int (*prepare)(struct hk_disk *d, uint64_t size, char *err, size_t errlen);
};

extern const struct hk_disk_ops hk_disk_file_ops;
extern const struct hk_disk_ops hk_disk_blk_ops;

struct hk_disk {
	const struct hk_disk_ops *ops;
	char *name;
	char *path;
	int fd;
	bool direct;
	bool created; /* this open created the file: unlink it on failure */
	bool fixed;   /* fd registered with the ring (IOSQE_FIXED_FILE, index 0) */
	unsigned bs;  /* alignment under O_DIRECT, HK_DISK_SECTOR otherwise */
	uint64_t size;
	unsigned qd;
	char note[HK_DISK_NOTE_MAX];

	struct io_uring ring;
	bool ring_up;
	pthread_t thread;
	bool thread_up;

	/* Everything below is under lock. */
	pthread_mutex_t lock;
	pthread_cond_t idle;  /* outstanding dropped to 0 */
	unsigned inflight;    /* SQEs handed to the ring and not reaped */
	uint64_t outstanding; /* accepted requests whose done() has not returned */
	bool closing;
	struct hk_disk_io *rq_head, *rq_tail; /* waiting for a ring slot, FIFO */
	struct hk_disk_io *lw_head, *lw_tail; /* waiting for a range lock, FIFO */
	struct hk_disk_io *locked;	      /* holding a range lock */
	struct hk_disk_stats st;
};

/* disk_io.c: start the completion thread (signals blocked); stop it once idle. */
int hk_disk_thread_start(struct hk_disk *d, char *err, size_t errlen);
void hk_disk_thread_stop(struct hk_disk *d);

/* snprintf into err with the "disk NAME: " prefix. */
void hk_disk_errf(const struct hk_disk *d, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Append to d->note ("; " between notes): it stays one line. */
void hk_disk_notef(struct hk_disk *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
