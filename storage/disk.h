/*
 * storage/ disk backends: a guest disk served from a node-local regular
 * file or block device, every I/O through one io_uring per disk.
 *
 * A disk is opened from a config (hk_disk_open), takes batches of
 * asynchronous requests (hk_disk_submit) and calls each request's done()
 * on the disk's completion thread.  Offsets and lengths are in bytes and
 * need no alignment: when the disk uses O_DIRECT and a request is not
 * aligned to the block size, the disk goes through an aligned bounce
 * buffer, with read-modify-write of partial edge blocks (serialized
 * against overlapping writes, see docs/storage.md).
 *
 * Thread safety: hk_disk_submit and the synchronous helpers may be called
 * from any thread, concurrently.  done() runs on the completion thread and
 * may submit more I/O; it must not block for long (it holds up every
 * completion of that disk) and must not call the synchronous helpers.
 *
 * To be folded into storage/storage.h, the folder's one public header.
 */
#ifndef HK_STORAGE_DISK_H
#define HK_STORAGE_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define HK_DISK_SECTOR	   512u	      /* a disk's size is a multiple of this */
#define HK_DISK_QD_DEFAULT 64u	      /* queue_depth 0 means this */
#define HK_DISK_QD_MAX	   4096u      /* io_uring takes up to 32768; more is no faster */
#define HK_DISK_IO_MAX	   (1u << 30) /* bytes per request: res is an int */
#define HK_DISK_IOV_MAX	   1024u      /* iovecs per request (UIO_MAXIOV) */
#define HK_DISK_NOTE_MAX   256u

struct hk_disk;

/* ---- opening ------------------------------------------------------------- */

enum hk_disk_direct {
	HK_DISK_DIRECT_AUTO = 0, /* O_DIRECT if the file system takes it, else buffered + note */
	HK_DISK_DIRECT_ON,	 /* O_DIRECT or fail */
	HK_DISK_DIRECT_OFF,	 /* page cache */
};

struct hk_disk_config {
	const char *name; /* for messages and the thread name ("d0"); NULL = "disk" */
	const char *path; /* regular file or block device */
	/*
	 * Bytes the guest sees, a multiple of HK_DISK_SECTOR (and of the block
	 * size under O_DIRECT).  0 = the whole file or device.  A backing object
	 * shorter than this is refused unless create is set.
	 */
	uint64_t size;
	unsigned queue_depth; /* requests in the kernel at once; 0 = HK_DISK_QD_DEFAULT */
	enum hk_disk_direct direct;
	/*
	 * Regular files only: create the file if missing, extend it to size,
	 * and allocate every block (fallocate): writes into unallocated ranges
	 * were ~17x slower on these machines.  Existing data is kept.  Needs a
	 * size.  Ignored for block devices.
	 */
	bool create;
};

/*
 * Open a disk and start its completion thread.  The backend (file or
 * block device) is picked from the path's type.  Returns 0 with *out set,
 * or -errno with one line in err naming the disk, e.g.
 * "disk d0: /var/d0.img is 1048576 bytes, configured 4294967296".
 * A file this call created is removed again if the open fails.
 * Block devices are opened O_EXCL: a mounted device is refused (-EBUSY).
 */
int hk_disk_open(const struct hk_disk_config *cfg, struct hk_disk **out, char *err, size_t errlen);

/*
 * Wait for every accepted request's done() to return, stop the thread,
 * close the file.  Submissions racing with close get -ESHUTDOWN.  Does not
 * flush: call hk_disk_flush first when the data must be durable.  NULL is
 * a no-op.  Must not be called from a done() callback.
 */
void hk_disk_close(struct hk_disk *disk);

const char *hk_disk_name(const struct hk_disk *disk);
const char *hk_disk_backend(const struct hk_disk *disk); /* "file" or "blk" */
uint64_t hk_disk_size(const struct hk_disk *disk);
/* Alignment O_DIRECT needs (offsets, lengths, buffers); HK_DISK_SECTOR if buffered. */
unsigned hk_disk_block_size(const struct hk_disk *disk);
bool hk_disk_uses_direct(const struct hk_disk *disk);
/*
 * One line the caller may log, "" if none: why AUTO fell back to buffered
 * I/O, or that the file system could not preallocate a created file.
 */
const char *hk_disk_note(const struct hk_disk *disk);

/* ---- asynchronous I/O ---------------------------------------------------- */

enum hk_disk_op {
	HK_DISK_READ = 0,
	HK_DISK_WRITE,
	/*
	 * fdatasync of the whole disk: covers writes that completed before it
	 * was submitted, not ones still in flight (as a virtio-blk FLUSH).
	 */
	HK_DISK_FLUSH,
};

/* Write flag: the write is durable when done() sees it (RWF_DSYNC, "FUA"). */
#define HK_DISK_IO_FUA (1u << 0)

struct hk_disk_io;
typedef void (*hk_disk_done_fn)(struct hk_disk_io *io, int res);

/* Disk-private state of a request: do not touch between submit and done. */
struct hk_disk_io_priv {
	struct hk_disk_io *next;	      /* ring-wait or lock-wait queue */
	struct hk_disk_io *lk_prev, *lk_next; /* writes holding a range lock */
	void *bounce;			      /* aligned copy of [b_off, b_off + b_len) */
	struct iovec *rest;		      /* what is left after a short transfer */
	unsigned rest_cnt;
	uint64_t len;	/* sum of iov lengths */
	uint64_t moved; /* bytes done in the current stage */
	uint64_t b_off, b_len;
	int res;     /* error decided before any I/O, delivered through the ring */
	int retries; /* -EAGAIN/-EINTR resubmissions */
	uint8_t stage;
	uint8_t rmw;	/* partial edge blocks: read them first */
	uint8_t locked; /* on the disk's range-lock list */
};

/*
 * One request.  The caller owns the memory and fills the first fields;
 * iov and the buffers it points to must stay valid until done() is called.
 */
struct hk_disk_io {
	enum hk_disk_op op;
	unsigned flags; /* HK_DISK_IO_* */
	uint64_t offset;
	const struct iovec *iov; /* READ/WRITE; ignored for FLUSH */
	unsigned iovcnt;	 /* 0..HK_DISK_IOV_MAX */
	/*
	 * Called exactly once, on the completion thread, with the full length
	 * in bytes (short transfers are resumed internally) or -errno.  The
	 * request is the caller's again when done() is entered; it may be
	 * freed or reused there.
	 */
	hk_disk_done_fn done;
	void *ctx; /* the caller's */
	struct hk_disk_io_priv priv;
};

/*
 * Queue n requests with one io_uring_submit.  Returns 0 when all were
 * accepted: each then gets exactly one done(), including requests that
 * are invalid, which fail without touching the disk:
 *   -EINVAL  read past the end, bad op, iovcnt or length over the limits
 *   -ENOSPC  write past the end (as pwrite on a block device)
 * Never -EAGAIN: when the ring is full requests wait inside the disk, in
 * order.  Returns -EINVAL (disk, ios or a done NULL) or -ESHUTDOWN
 * (closing) with none accepted.  Cost: O(queued writes) per write under
 * O_DIRECT for the range-lock check.
 */
int hk_disk_submit(struct hk_disk *disk, struct hk_disk_io *const *ios, unsigned n);

/* ---- synchronous helpers (tools, tests) ------------------------------------ */

/*
 * One request through the asynchronous path, waiting for it.  Return 0
 * when all len bytes were transferred, else -errno as for done().
 * -EDEADLK when called from the disk's completion thread.
 */
int hk_disk_pread(struct hk_disk *disk, void *buf, size_t len, uint64_t off);
int hk_disk_pwrite(struct hk_disk *disk, const void *buf, size_t len, uint64_t off);
int hk_disk_flush(struct hk_disk *disk);

/* ---- statistics ------------------------------------------------------------ */

struct hk_disk_stats {
	uint64_t reads, writes, flushes; /* completed requests, also failed ones */
	uint64_t bytes_read, bytes_written;
	uint64_t errors;	/* requests completed with -errno */
	uint64_t bounced;	/* requests that went through a bounce buffer */
	uint64_t rmw;		/* of those, writes that read partial edge blocks */
	uint64_t short_retries; /* resubmissions after short transfers or -EAGAIN */
	uint64_t ring_waits;	/* submissions that waited for a ring slot */
	uint64_t lock_waits;	/* writes that waited for an overlapping read-modify-write */
};

void hk_disk_get_stats(struct hk_disk *disk, struct hk_disk_stats *st);

#endif
