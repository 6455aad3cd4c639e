/*
 * seqwriter — the Snapstack test guest's disk writer.
 *
 * Owns the on-disk record log that every snapshot test asserts on, and the
 * console lines that report it.  The format and the console lines are
 * documented in guest/README.md; scripts/guest-check.py reads the same format
 * from the host.  Keep the three in step.
 *
 * Modes:
 *   seqwriter                      run the writer (the guest starts it at boot)
 *                                  SIGUSR1 freezes it (it finishes the current
 *                                  round, prints FROZEN, writes nothing until
 *                                  SIGUSR2, then prints THAWED); the guest
 *                                  agent (qga.c) uses this for fsfreeze
 *   seqwriter --power-button       wait for the ACPI power button, then ask
 *                                  init (pid 1) for a clean poweroff
 *   seqwriter --format-image FILE  write an empty log header (boot=0) into the
 *                                  data region of a disk image (host side,
 *                                  used by scripts/build-guest.sh)
 *
 * Data region of a disk:
 *   - if sector 0 holds a log header: the whole disk ("whole-disk" layout);
 *   - else if sector 0 is an MBR whose second entry has type 0xDA: that
 *     partition ("partition" layout; the boot disk is built this way);
 *   - else: the whole disk, initialised on first use.
 * Region sector 0 is the header, region sector 1 + i is record slot i, which
 * holds record number base_seq + i.  Every record is one 512-byte sector.
 *
 * Write discipline: record n and a zero sector for slot n+1 go out in one
 * 1024-byte O_DIRECT|O_SYNC write (O_DIRECT alone, never flushed, with
 * snapstack.flush=off), so the first slot after the log is always
 * zero and a snapshot taken between any two guest requests holds an exact
 * prefix.  Disks are written in lockstep: record n reaches every disk (boot
 * disk first, then the others by name) before record n+1 is written anywhere.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/input.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECTOR 512u
#define HEADER_MAGIC "SNAPSTKH"
#define RECORD_MAGIC "SNAPSTKR"
#define FORMAT_VERSION 1u
#define CRC_OFFSET 508u
#define MBR_DATA_PART_TYPE 0xDAu
#define SCAN_CHUNK_SECTORS 256u
#define MAX_DISKS 32

/* ---------------------------------------------------------------- helpers */

static uint32_t crc_table[256];

static void crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 as zlib computes it (Python's zlib.crc32). */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++)
		c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* One console line, written with a single write(2) so lines never mix. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t off = 0;
	while (off < n) {
		ssize_t w = write(STDOUT_FILENO, line + off, (size_t)(n - off));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += w;
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ----------------------------------------------------------- the format */

struct header {
	uint32_t boot;
	uint64_t base_seq;
	uint64_t capacity;
};

static void encode_header(uint8_t *s, const struct header *h)
{
	memset(s, 0, SECTOR);
	memcpy(s, HEADER_MAGIC, 8);
	put_u32(s + 8, FORMAT_VERSION);
	put_u32(s + 12, h->boot);
	put_u64(s + 16, h->base_seq);
	put_u64(s + 24, h->capacity);
	put_u32(s + CRC_OFFSET, crc32_of(s, CRC_OFFSET));
}

static int decode_header(const uint8_t *s, struct header *h)
{
	if (memcmp(s, HEADER_MAGIC, 8) != 0)
		return 0;
	if (get_u32(s + 8) != FORMAT_VERSION)
		return 0;
	if (get_u32(s + CRC_OFFSET) != crc32_of(s, CRC_OFFSET))
		return 0;
	h->boot = get_u32(s + 12);
	h->base_seq = get_u64(s + 16);
	h->capacity = get_u64(s + 24);
	return 1;
}

static void encode_record(uint8_t *s, uint64_t seq, uint32_t boot, uint64_t ram)
{
	memset(s, 0, SECTOR);
	memcpy(s, RECORD_MAGIC, 8);
	put_u64(s + 8, seq);
	put_u32(s + 16, boot);
	put_u32(s + 20, 0);
	put_u64(s + 24, ram);
	for (uint32_t i = 32; i < CRC_OFFSET; i++)
		s[i] = (uint8_t)(seq * 251u + i);
	put_u32(s + CRC_OFFSET, crc32_of(s, CRC_OFFSET));
}

static int record_valid(const uint8_t *s, uint64_t expected_seq)
{
	return memcmp(s, RECORD_MAGIC, 8) == 0 &&
	       get_u64(s + 8) == expected_seq &&
	       get_u32(s + CRC_OFFSET) == crc32_of(s, CRC_OFFSET);
}

/* ------------------------------------------------------------ one disk */

struct disk {
	char name[32];     /* "vda"; for --format-image the file path */
	int fd;
	uint64_t start;    /* first sector of the data region */
	uint64_t sectors;  /* size of the data region in sectors */
	const char *layout;
	struct header hdr;
	int has_header;
	uint64_t last_seq; /* seq of the last non-empty slot (base_seq - 1 if none) */
	uint32_t corrupt;
	int full;
};

static uint8_t *io_buf;    /* SCAN_CHUNK_SECTORS sectors, 4096-aligned */
static uint8_t *write_buf; /* 2 sectors, 4096-aligned */

static int read_at(int fd, uint8_t *buf, size_t len, uint64_t sector)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, buf + done, len - done, (off_t)(sector * SECTOR + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static int write_at(int fd, const uint8_t *buf, size_t len, uint64_t sector)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = pwrite(fd, buf + done, len - done, (off_t)(sector * SECTOR + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		done += (size_t)w;
	}
	return 0;
}

static int device_sectors(int fd, uint64_t *sectors)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -1;
	if (S_ISREG(st.st_mode)) {
		*sectors = (uint64_t)st.st_size / SECTOR;
		return 0;
	}
	uint64_t bytes = 0;
	if (ioctl(fd, BLKGETSIZE64, &bytes) != 0)
		return -1;
	*sectors = bytes / SECTOR;
	return 0;
}

/* snapstack.flush=off: no O_SYNC, so the guest kernel never sends the disk a
 * flush (a write returns once QEMU accepted it; QEMU's own caches, qcow2
 * metadata included, stay unflushed).  Freezing and a clean stop still fsync. */
static int flush_off;
/* snapstack.power_button=ignore: the watcher reports the button, nothing more. */
static int power_button_ignored;

/* Opens a disk for synchronous direct I/O; falls back to O_SYNC alone where
 * O_DIRECT cannot do 512-byte writes (4K-sector disks, some filesystems). */
static int open_disk(const char *path)
{
	int sync_flag = flush_off ? 0 : O_SYNC;
	int fd = open(path, O_RDWR | O_DIRECT | sync_flag | O_CLOEXEC);
	if (fd >= 0) {
		int lbs = 0;
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) &&
		    ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs == (int)SECTOR)
			return fd;
		close(fd);
	}
	return open(path, O_RDWR | sync_flag | O_CLOEXEC);
}

/* Finds the data region (see the top of the file).  Returns 0 or -1. */
static int locate_region(struct disk *d)
{
	uint64_t total;
	if (device_sectors(d->fd, &total) != 0 || total < 4)
		return -1;
	if (read_at(d->fd, io_buf, SECTOR, 0) != 0)
		return -1;
	struct header h;
	if (decode_header(io_buf, &h)) {
		d->start = 0;
		d->sectors = total;
		d->layout = "whole-disk";
		return 0;
	}
	if (io_buf[510] == 0x55 && io_buf[511] == 0xAA) {
		const uint8_t *e = io_buf + 446 + 16; /* second partition entry */
		uint64_t start = get_u32(e + 8), count = get_u32(e + 12);
		if (e[4] == MBR_DATA_PART_TYPE && count >= 4 && start + count <= total) {
			d->start = start;
			d->sectors = count;
			d->layout = "partition";
			return 0;
		}
	}
	d->start = 0;
	d->sectors = total;
	d->layout = "whole-disk";
	return 0;
}

static int has_data_partition(const struct disk *d)
{
	return strcmp(d->layout, "partition") == 0;
}

/* Reads the header and scans the log up to the first all-zero slot. */
static int scan_log(struct disk *d)
{
	if (read_at(d->fd, io_buf, SECTOR, d->start) != 0)
		return -1;
	d->has_header = decode_header(io_buf, &d->hdr);
	d->corrupt = 0;
	if (!d->has_header) {
		d->last_seq = 0;
		return 0;
	}
	uint64_t slots = d->sectors - 1, n = 0;
	int done = 0;
	while (!done && n < slots) {
		uint64_t chunk = slots - n < SCAN_CHUNK_SECTORS ? slots - n : SCAN_CHUNK_SECTORS;
		if (read_at(d->fd, io_buf, chunk * SECTOR, d->start + 1 + n) != 0)
			return -1;
		for (uint64_t i = 0; i < chunk; i++) {
			const uint8_t *s = io_buf + i * SECTOR;
			if (all_zero(s, SECTOR)) {
				done = 1;
				break;
			}
			if (!record_valid(s, d->hdr.base_seq + n))
				d->corrupt++;
			n++;
		}
	}
	d->last_seq = d->hdr.base_seq + n - 1;
	return 0;
}

static int write_header(struct disk *d)
{
	encode_header(write_buf, &d->hdr);
	return write_at(d->fd, write_buf, SECTOR, d->start);
}

/* Starts a new, empty log whose first record will be base_seq.  Slot 0 is
 * zeroed before the header names the new base, so no instant shows a header
 * over stale records. */
static int reset_log(struct disk *d, uint64_t base_seq, uint32_t boot)
{
	memset(write_buf, 0, SECTOR);
	if (write_at(d->fd, write_buf, SECTOR, d->start + 1) != 0)
		return -1;
	d->hdr.boot = boot;
	d->hdr.base_seq = base_seq;
	d->hdr.capacity = d->sectors - 1;
	d->has_header = 1;
	d->last_seq = base_seq - 1;
	d->corrupt = 0;
	d->full = 0;
	return write_header(d);
}

/* Writes record seq and zeroes the slot after it, in one request. */
static int append_record(struct disk *d, uint64_t seq, uint32_t boot, uint64_t ram)
{
	uint64_t slot = seq - d->hdr.base_seq;
	uint64_t slots = d->sectors - 1;
	if (slot >= slots) {
		d->full = 1;
		return 1;
	}
	encode_record(write_buf, seq, boot, ram);
	size_t len = SECTOR;
	if (slot + 1 < slots) {
		memset(write_buf + SECTOR, 0, SECTOR);
		len = 2 * SECTOR;
	}
	if (write_at(d->fd, write_buf, len, d->start + 1 + slot) != 0)
		return -1;
	d->last_seq = seq;
	return 0;
}

/* ------------------------------------------------------------ settings */

static unsigned interval_ms = 100, print_every = 10, rescan_ms = 2000;

static void read_cmdline(void)
{
	char buf[4096];
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *tok = strtok(buf, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
		unsigned long v;
		if (sscanf(tok, "snapstack.interval_ms=%lu", &v) == 1 && v >= 1)
			interval_ms = (unsigned)v;
		else if (sscanf(tok, "snapstack.print_every=%lu", &v) == 1 && v >= 1)
			print_every = (unsigned)v;
		else if (sscanf(tok, "snapstack.rescan_ms=%lu", &v) == 1 && v >= 100)
			rescan_ms = (unsigned)v;
		else if (strcmp(tok, "snapstack.flush=off") == 0)
			flush_off = 1;
		else if (strcmp(tok, "snapstack.power_button=ignore") == 0)
			power_button_ignored = 1;
	}
}

/* -------------------------------------------------------- the disk set */

static struct disk disks[MAX_DISKS]; /* disks[0] is the boot disk when n_disks > 0 */
static int n_disks;
static uint32_t boot_number;
static uint64_t last_written; /* seq of the last record on every disk */
static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t freeze_requested;

static void on_term(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void on_freeze(int sig)
{
	freeze_requested = sig == SIGUSR1;
}

/* Acknowledgement for the guest agent: exists while frozen, holds the number
 * of disks; created by a rename so the agent never reads half of it. */
#define FROZEN_FILE "/run/seqwriter.frozen"

static void set_frozen_file(int frozen)
{
	if (!frozen) {
		unlink(FROZEN_FILE);
		return;
	}
	FILE *f = fopen(FROZEN_FILE ".tmp", "w");
	if (!f)
		return;
	fprintf(f, "%d\n", n_disks);
	fclose(f);
	rename(FROZEN_FILE ".tmp", FROZEN_FILE);
}

/* Whole-disk virtio names: vda … vdz, vdaa …; no partition digits. */
static int is_disk_name(const char *n)
{
	if (strncmp(n, "vd", 2) != 0 || !n[2])
		return 0;
	for (const char *p = n + 2; *p; p++)
		if (*p < 'a' || *p > 'z')
			return 0;
	return strlen(n) < sizeof(((struct disk *)0)->name);
}

static int name_order(const void *a, const void *b)
{
	const char *x = a, *y = b;
	size_t lx = strlen(x), ly = strlen(y);
	if (lx != ly)
		return lx < ly ? -1 : 1;
	return strcmp(x, y);
}

#define NAME_LEN 32
static int list_dev_disks(char names[][NAME_LEN], int max)
{
	DIR *dir = opendir("/dev");
	int n = 0;
	if (!dir)
		return 0;
	struct dirent *e;
	while ((e = readdir(dir)) && n < max)
		if (is_disk_name(e->d_name))
			snprintf(names[n++], NAME_LEN, "%s", e->d_name);
	closedir(dir);
	qsort(names, (size_t)n, NAME_LEN, name_order);
	return n;
}

static int find_disk(const char *name)
{
	for (int i = 0; i < n_disks; i++)
		if (strcmp(disks[i].name, name) == 0)
			return i;
	return -1;
}

static int open_named(struct disk *d, const char *name)
{
	char path[64];
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", name);
	snprintf(path, sizeof(path), "/dev/%s", name);
	d->fd = open_disk(path);
	if (d->fd < 0)
		return -1;
	if (locate_region(d) != 0 || scan_log(d) != 0) {
		close(d->fd);
		return -1;
	}
	return 0;
}

static void drop_disk(int i)
{
	close(disks[i].fd);
	memmove(&disks[i], &disks[i + 1], sizeof(disks[0]) * (size_t)(n_disks - i - 1));
	n_disks--;
}

/* Keeps disks[1..] sorted by name after an append. */
static void sort_extras(void)
{
	for (int i = n_disks - 1; i > 1; i--) {
		if (name_order(disks[i - 1].name, disks[i].name) <= 0)
			break;
		struct disk t = disks[i];
		disks[i] = disks[i - 1];
		disks[i - 1] = t;
	}
}

/* Makes d the boot disk: its log decides the boot number and the next seq. */
static int attach_boot_disk(struct disk *d)
{
	if (!d->has_header && reset_log(d, 1, 0) != 0)
		return -1;
	d->hdr.boot += 1;
	d->hdr.capacity = d->sectors - 1;
	if (write_header(d) != 0)
		return -1;
	boot_number = d->hdr.boot;
	last_written = d->last_seq;
	disks[0] = *d;
	n_disks = 1;
	return 0;
}

/* Adds an extra disk.  Its log goes on only if it ends exactly where the
 * boot disk's does; otherwise it restarts at the next record. */
static int attach_extra_disk(struct disk *d)
{
	say("DISK %s last_seq=%llu corrupt=%u", d->name,
	    (unsigned long long)d->last_seq, d->corrupt);
	if (!d->has_header || d->last_seq != last_written) {
		uint32_t boot = d->has_header ? d->hdr.boot : 0;
		if (reset_log(d, last_written + 1, boot) != 0)
			return -1;
		say("RESET %s base=%llu", d->name, (unsigned long long)(last_written + 1));
	}
	d->hdr.boot += 1;
	d->hdr.capacity = d->sectors - 1;
	if (write_header(d) != 0)
		return -1;
	if (n_disks >= MAX_DISKS)
		return -1;
	disks[n_disks++] = *d;
	sort_extras();
	return 0;
}

static void start_up(void)
{
	char names[MAX_DISKS][NAME_LEN];
	int n = list_dev_disks(names, MAX_DISKS);
	struct disk found[MAX_DISKS];
	int n_found = 0;
	for (int i = 0; i < n; i++) {
		if (open_named(&found[n_found], names[i]) == 0)
			n_found++;
		else
			say("ERROR %s cannot be read", names[i]);
	}
	int boot = -1;
	for (int i = 0; i < n_found && boot < 0; i++)
		if (has_data_partition(&found[i]))
			boot = i;
	if (boot < 0 && n_found > 0)
		boot = 0;
	if (boot >= 0 && attach_boot_disk(&found[boot]) != 0) {
		say("ERROR %s cannot be written", found[boot].name);
		close(found[boot].fd);
		boot = -1;
	}
	if (boot < 0) {
		for (int i = 0; i < n_found; i++)
			close(found[i].fd);
		say("SNAPSTACK-GUEST boot=0 last_seq=0 corrupt=0 disk=none");
		say("READY disks=0 interval_ms=%u", interval_ms);
		return;
	}
	say("SNAPSTACK-GUEST boot=%u last_seq=%llu corrupt=%u disk=%s", boot_number,
	    (unsigned long long)disks[0].last_seq, disks[0].corrupt, disks[0].name);
	for (int i = 0; i < n_found; i++) {
		if (i == boot)
			continue;
		if (attach_extra_disk(&found[i]) != 0) {
			say("ERROR %s cannot be written", found[i].name);
			close(found[i].fd);
		}
	}
	say("READY disks=%d interval_ms=%u", n_disks, interval_ms);
}

static int boot_disk_lost;
static int boot_disk_failing;

static void rescan(void)
{
	char path[64];
	struct stat st;
	for (int i = n_disks - 1; i >= 0; i--) {
		snprintf(path, sizeof(path), "/dev/%s", disks[i].name);
		if (stat(path, &st) != 0) {
			say("UNPLUG %s", disks[i].name);
			if (i == 0) {
				boot_disk_lost = 1;
				while (n_disks > 0)
					drop_disk(n_disks - 1);
				return;
			}
			drop_disk(i);
		}
	}
	if (boot_disk_lost)
		return;
	char names[MAX_DISKS][NAME_LEN];
	int n = list_dev_disks(names, MAX_DISKS);
	for (int i = 0; i < n; i++) {
		if (find_disk(names[i]) >= 0)
			continue;
		struct disk d;
		say("HOTPLUG %s", names[i]);
		if (open_named(&d, names[i]) != 0) {
			say("ERROR %s cannot be read", names[i]);
			continue;
		}
		if (n_disks == 0) {
			if (attach_boot_disk(&d) != 0) {
				say("ERROR %s cannot be written", d.name);
				close(d.fd);
				continue;
			}
			say("DISK %s last_seq=%llu corrupt=%u", d.name,
			    (unsigned long long)disks[0].last_seq, disks[0].corrupt);
			say("SNAPSTACK-GUEST boot=%u last_seq=%llu corrupt=%u disk=%s", boot_number,
			    (unsigned long long)disks[0].last_seq, disks[0].corrupt, disks[0].name);
		} else if (attach_extra_disk(&d) != 0) {
			say("ERROR %s cannot be written", d.name);
			close(d.fd);
		}
	}
}

/* One tick: record last_written + 1 on every disk, boot disk first. */
static void write_round(uint64_t ram)
{
	if (n_disks == 0 || disks[0].full) {
		if (ram % print_every == 0)
			say("IDLE ram=%llu", (unsigned long long)ram);
		return;
	}
	uint64_t seq = last_written + 1;
	int r = append_record(&disks[0], seq, boot_number, ram);
	if (r == 1) {
		say("FULL %s last_seq=%llu", disks[0].name, (unsigned long long)last_written);
		return;
	}
	if (r < 0) {
		/* Said once per run of failures; the record is retried next tick. */
		if (!boot_disk_failing)
			say("ERROR %s write failed errno=%d", disks[0].name, errno);
		boot_disk_failing = 1;
		return;
	}
	boot_disk_failing = 0;
	for (int i = 1; i < n_disks;) {
		if (disks[i].full) {
			i++;
			continue;
		}
		r = append_record(&disks[i], seq, boot_number, ram);
		if (r < 0) {
			say("UNPLUG %s", disks[i].name);
			drop_disk(i);
			continue;
		}
		if (r == 1)
			say("FULL %s last_seq=%llu", disks[i].name, (unsigned long long)last_written);
		i++;
	}
	last_written = seq;
	if (seq % print_every == 0)
		say("SEQ %llu ram=%llu", (unsigned long long)seq, (unsigned long long)ram);
}

/* The state the guest's web service answers (/cgi-bin/state): written to a
 * temporary file and renamed, so a reader never sees half a line. */
#define STATE_FILE "/run/seqwriter.state"
static void publish_state(uint64_t ram)
{
	FILE *f = fopen(STATE_FILE ".tmp", "w");
	if (!f)
		return;
	fprintf(f, "boot=%u last_seq=%llu ram=%llu\n", (unsigned)boot_number,
		(unsigned long long)last_written, (unsigned long long)ram);
	if (fclose(f) == 0)
		rename(STATE_FILE ".tmp", STATE_FILE);
}

static int run_writer(void)
{
	read_cmdline();
	FILE *pid = fopen("/run/seqwriter.pid", "w");
	if (pid) {
		fprintf(pid, "%d\n", (int)getpid());
		fclose(pid);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_freeze;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);

	start_up();

	uint64_t ram = 0;
	uint64_t next_tick = now_ms() + interval_ms;
	uint64_t next_rescan = now_ms() + rescan_ms;
	int frozen = 0;
	while (!stop_requested) {
		/* Freezing happens between rounds: every record started is on every
		 * disk before FROZEN is said.  While frozen nothing ticks (ram too). */
		if (freeze_requested != frozen) {
			frozen = freeze_requested;
			if (frozen) {
				for (int i = 0; i < n_disks; i++)
					fsync(disks[i].fd);
				say("FROZEN last_seq=%llu ram=%llu", (unsigned long long)last_written,
				    (unsigned long long)ram);
			} else {
				say("THAWED last_seq=%llu ram=%llu", (unsigned long long)last_written,
				    (unsigned long long)ram);
				next_tick = now_ms() + interval_ms;
			}
			set_frozen_file(frozen);
		}
		if (frozen) {
			struct timespec ts = {0, 5 * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		uint64_t now = now_ms();
		if (now < next_tick) {
			struct timespec ts = {(time_t)((next_tick - now) / 1000),
					      (long)((next_tick - now) % 1000) * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		/* At most one record per tick: after a pause (memory restore, a
		 * stopped VM) the pace resumes instead of bursting. */
		next_tick += interval_ms;
		if (next_tick < now)
			next_tick = now + interval_ms;
		ram++;
		write_round(ram);
		publish_state(ram);
		if (now >= next_rescan) {
			rescan();
			next_rescan = now_ms() + rescan_ms;
		}
	}
	say("STOPPED last_seq=%llu ram=%llu", (unsigned long long)last_written,
	    (unsigned long long)ram);
	for (int i = 0; i < n_disks; i++) {
		fsync(disks[i].fd);
		close(disks[i].fd);
	}
	unlink("/run/seqwriter.pid");
	set_frozen_file(0);
	return 0;
}

/* -------------------------------------------------------- power button */

static int run_power_button(void)
{
	read_cmdline();
	struct pollfd fds[32];
	int n = 0;
	while (n == 0) {
		DIR *dir = opendir("/dev/input");
		struct dirent *e;
		while (dir && (e = readdir(dir)) && n < 32) {
			if (strncmp(e->d_name, "event", 5) != 0)
				continue;
			char path[300];
			snprintf(path, sizeof(path), "/dev/input/%s", e->d_name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				fds[n].fd = fd;
				fds[n].events = POLLIN;
				n++;
			}
		}
		if (dir)
			closedir(dir);
		if (n == 0)
			sleep(1);
	}
	for (;;) {
		if (poll(fds, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (!(fds[i].revents & POLLIN))
				continue;
			struct input_event ev[16];
			ssize_t r = read(fds[i].fd, ev, sizeof(ev));
			for (ssize_t k = 0; r > 0 && k < r / (ssize_t)sizeof(ev[0]); k++) {
				if (ev[k].type == EV_KEY && ev[k].code == KEY_POWER && ev[k].value == 1) {
					if (power_button_ignored) {
						say("POWERBUTTON ignored");
						continue;
					}
					say("POWERBUTTON");
					/* busybox init: SIGUSR2 = poweroff, running the
					 * ::shutdown: actions (which stop the writer) first. */
					kill(1, SIGUSR2);
				}
			}
		}
	}
}

/* -------------------------------------------------------- format-image */

static int run_format_image(const char *path)
{
	struct disk d;
	memset(&d, 0, sizeof(d));
	snprintf(d.name, sizeof(d.name), "image");
	d.fd = open(path, O_RDWR | O_CLOEXEC);
	if (d.fd < 0) {
		perror(path);
		return 1;
	}
	if (locate_region(&d) != 0 || reset_log(&d, 1, 0) != 0 || fsync(d.fd) != 0) {
		fprintf(stderr, "%s: cannot write the log header\n", path);
		return 1;
	}
	printf("%s: %s layout, region at sector %llu, %llu record slots\n", path, d.layout,
	       (unsigned long long)d.start, (unsigned long long)(d.sectors - 1));
	close(d.fd);
	return 0;
}

int main(int argc, char **argv)
{
	crc32_init();
	if (posix_memalign((void **)&io_buf, 4096, SCAN_CHUNK_SECTORS * SECTOR) != 0 ||
	    posix_memalign((void **)&write_buf, 4096, 2 * SECTOR) != 0)
		return 1;
	if (argc == 1)
		return run_writer();
	if (argc == 2 && strcmp(argv[1], "--power-button") == 0)
		return run_power_button();
	if (argc == 3 && strcmp(argv[1], "--format-image") == 0)
		return run_format_image(argv[2]);
	fprintf(stderr, "usage: seqwriter [--power-button | --format-image FILE]\n");
	return 2;
}
