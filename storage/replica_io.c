/*
 * Adding entries from disk I/O without races (replica.h, "I/O protocol").
 *
 * An I/O's completion may only add "page == block" if nothing could have
 * changed either side while the transfer was in flight.  Two records make
 * that decidable, both under the table's write lock:
 *
 *   history  every change (drop of pages, of blocks, of a node, clear, add)
 *            in a ring of HK_REPLICA_IO_HISTORY entries, numbered by
 *            ev_seq.  A ticket is the ev_seq at io_begin; io_end scans the
 *            changes since then (O(changes), at most the ring) for one that
 *            overlaps its pages or blocks.  If the ring wrapped, the answer
 *            is "maybe", which means no entry.
 *   pins     reads in flight: their destination pages are changing until
 *            io_end.  A completion of any kind over pinned pages adds
 *            nothing; plain adds there are -EBUSY.  O(pins) per add.  A
 *            read that finds the pin array full pins everything until it
 *            ends (no add succeeds meanwhile): safe, and rare at 1024.
 *
 * Sizes: at queue depth 256 an I/O sees ~512 begins and ends of others
 * while in flight, plus guest write faults; 4096 entries keep "maybe"
 * rare.  Costs: 96 KiB of history and 24 KiB of pins per table, nothing
 * per I/O; io_end scans the changes since its begin, at most 4096 (a few
 * microseconds, against a disk I/O's tens).
 */
#include <errno.h>

#include "replica_internal.h"

/* No pin slot was free: this read adds nothing, and until it ends no add
 * anywhere succeeds (we do not know where its data is landing). */
#define TICKET_DOOMED 1ull

void io_note(struct hk_replica *t, uint8_t kind, uint64_t lo, uint64_t hi, uint16_t node)
{
	struct ev *e = &t->ev[t->ev_seq % HK_REPLICA_IO_HISTORY];

	e->kind = kind;
	e->lo = lo;
	e->hi = hi;
	e->node = node;
	t->ev_seq++;
}

static bool overlaps(uint64_t alo, uint64_t ahi, uint64_t blo, uint64_t bhi)
{
	return alo < bhi && blo < ahi;
}

bool io_pinned(const struct hk_replica *t, uint64_t lo, uint64_t hi)
{
	if (t->unpinned)
		return true;
	for (uint32_t i = 0; i < t->npins; i++)
		if (overlaps(lo, hi, t->pins[i].lo, t->pins[i].hi))
			return true;
	return false;
}

/* Did anything touch these pages, blocks or node since seq? */
static bool changed_since(const struct hk_replica *t, uint64_t seq, uint64_t glo, uint64_t ghi,
			  uint64_t blo, uint64_t bhi, uint16_t node)
{
	if (seq > t->ev_seq || t->ev_seq - seq > HK_REPLICA_IO_HISTORY)
		return true;
	for (uint64_t s = seq; s < t->ev_seq; s++) {
		const struct ev *e = &t->ev[s % HK_REPLICA_IO_HISTORY];

		switch (e->kind) {
		case EV_GPA:
			if (overlaps(glo, ghi, e->lo, e->hi))
				return true;
			break;
		case EV_BLK:
			if (overlaps(blo, bhi, e->lo, e->hi))
				return true;
			break;
		case EV_NODE:
			if (e->node == node)
				return true;
			break;
		default:
			return true;
		}
	}
	return false;
}

uint64_t hk_replica_io_begin(struct hk_replica *t, struct hk_replica_io *io)
{
	uint64_t lo, hi, dropped = 0;

	pthread_rwlock_wrlock(&t->lock);
	if (io->dir == HK_REPLICA_IO_READ && io->len) {
		/* The device is about to write these pages: their entries go
		 * now, and they stay pinned until io_end. */
		replica_gfn_outward(io->gpa, io->len, &lo, &hi);
		io_note(t, EV_GPA, lo, hi, 0);
		dropped = replica_drop_range(t, lo, hi);
		io->ticket = t->ev_seq << 1;
		if (t->npins < HK_REPLICA_IO_INFLIGHT) {
			t->pins[t->npins++] =
			    (struct pin){.lo = lo, .hi = hi, .ticket = io->ticket};
		} else {
			io->ticket |= TICKET_DOOMED;
			t->unpinned++;
		}
	} else {
		io->ticket = t->ev_seq << 1;
	}
	slab_trim(t);
	pthread_rwlock_unlock(&t->lock);
	return dropped;
}

static bool unpin(struct hk_replica *t, uint64_t ticket)
{
	for (uint32_t i = 0; i < t->npins; i++) {
		if (t->pins[i].ticket == ticket) {
			t->pins[i] = t->pins[--t->npins];
			return true;
		}
	}
	return false;
}

int64_t hk_replica_io_end(struct hk_replica *t, struct hk_replica_io *io, bool ok)
{
	bool doomed = io->ticket & TICKET_DOOMED;
	uint64_t seq = io->ticket >> 1;
	uint64_t glo, ghi, blo, bhi;
	bool stale;
	struct span s;
	int64_t ret;
	int err;

	if (!io->len)
		return 0;
	replica_gfn_outward(io->gpa, io->len, &glo, &ghi);
	replica_bkey_outward(io->disk, io->offset, io->len, &blo, &bhi);
	pthread_rwlock_wrlock(&t->lock);
	if (io->dir == HK_REPLICA_IO_READ) {
		if (doomed) {
			if (!t->unpinned) {
				ret = -EINVAL;
				goto out;
			}
			t->unpinned--;
		} else if (!unpin(t, io->ticket)) {
			ret = -EINVAL;
			goto out;
		}
		stale = doomed || changed_since(t, seq, glo, ghi, blo, bhi, io->node) ||
			io_pinned(t, glo, ghi);
		/* The pages changed while pinned: writes from them that began
		 * before now must not add entries. */
		io_note(t, EV_GPA, glo, ghi, 0);
		replica_drop_range(t, glo, ghi);
	} else {
		stale = doomed || changed_since(t, seq, glo, ghi, blo, bhi, io->node) ||
			io_pinned(t, glo, ghi);
		/* The blocks hold new data (or, after an error, unknown data). */
		io_note(t, EV_BLK, blo, bhi, 0);
		replica_drop_bkeys(t, blo, bhi);
	}
	err = replica_span(io->gpa, io->frame, io->disk, io->offset, io->len, &s);
	if (!ok || err || !s.n) {
		ret = ok ? err : 0;
		goto out;
	}
	if (stale) {
		t->stale_adds += s.n;
		ret = -ESTALE;
		goto out;
	}
	err = replica_insert(t, s.gfn, io->node, s.frame, s.bkey, s.n);
	ret = err ? err : (int64_t)s.n;
out:
	slab_trim(t);
	pthread_rwlock_unlock(&t->lock);
	return ret;
}
