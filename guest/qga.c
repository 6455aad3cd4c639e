/*
 * snapstack-qga — a minimal QEMU guest agent for the Snapstack test guest.
 *
 * Serves the QGA protocol (JSON objects in, one JSON reply line out) on the
 * virtio-serial port named org.qemu.guest_agent.0 (found through
 * /sys/class/virtio-ports/<port>/name, opened as /dev/<port>).  Commands:
 *
 *   guest-sync-delimited {id}  -> 0xFF {"return": id}
 *   guest-sync {id}            -> {"return": id}
 *   guest-ping                 -> {"return": {}}
 *   guest-fsfreeze-freeze      -> sync(2), then the writer (seqwriter) stops
 *                                 writing: SIGUSR1, and its acknowledgement
 *                                 /run/seqwriter.frozen (which holds the
 *                                 number of disks it writes) -> {"return": n}
 *   guest-fsfreeze-thaw        -> SIGUSR2 to the writer, wait until the file is
 *                                 gone -> {"return": n} (0 when not frozen)
 *   guest-fsfreeze-status      -> {"return": "frozen" | "thawed"}
 *   anything else              -> {"error": {"class": "CommandNotFound", …}}
 *
 * A 0xFF byte from the host resets the parser (half a request of a previous
 * client is dropped), as with qemu-ga.  The guest has no filesystem on its
 * disks: "freezing" means the writer finishes its current record round and
 * then writes nothing until thawed (it prints FROZEN / THAWED lines).
 *
 * Kernel command line: snapstack.agent=off (or =0/no) makes the agent print
 * "AGENT off" and exit, so tests can check a guest without an agent.
 * Console: "AGENT ready port=<vportNpM>" once the port is open.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.qemu.guest_agent.0"
#define WRITER_PID "/run/seqwriter.pid"
#define WRITER_FROZEN "/run/seqwriter.frozen"
#define MAX_REQUEST 65536
#define ACK_TIMEOUT_MS 5000
#define PORT_WAIT_S 60

static int port_fd = -1;
static int frozen;
static int frozen_count;

/* One console line, written with a single write(2). */
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
	if (write(STDOUT_FILENO, line, (size_t)n) < 0)
		return;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int agent_disabled(void)
{
	char buf[4096];
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	for (char *tok = strtok(buf, " \t\n"); tok; tok = strtok(NULL, " \t\n"))
		if (strcmp(tok, "snapstack.agent=off") == 0 || strcmp(tok, "snapstack.agent=0") == 0 ||
		    strcmp(tok, "snapstack.agent=no") == 0)
			return 1;
	return 0;
}

/* Finds the agent's port; fills dev ("vport1p1").  Returns 0 or -1. */
static int find_port(char *dev, size_t len)
{
	DIR *dir = opendir("/sys/class/virtio-ports");
	if (!dir)
		return -1;
	struct dirent *e;
	int found = -1;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], name[64] = {0};
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, name, sizeof(name) - 1);
		close(fd);
		if (n > 0 && name[n - 1] == '\n')
			name[n - 1] = 0;
		if (strcmp(name, PORT_NAME) == 0) {
			snprintf(dev, len, "%s", e->d_name);
			found = 0;
			break;
		}
	}
	closedir(dir);
	return found;
}

/* Writes all of buf to the port (blocks while no host client is connected). */
static void reply_raw(const char *buf, size_t n)
{
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(port_fd, buf + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			sleep_ms(10);
			continue;
		}
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	reply_raw(line, (size_t)n);
}

/* The string value of "key" in a JSON object (no escapes in our values). */
static int json_string(const char *obj, const char *key, char *out, size_t len)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	const char *p = strstr(obj, pattern);
	if (!p)
		return -1;
	p += strlen(pattern);
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != ':')
		return -1;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != '"')
		return -1;
	size_t i = 0;
	while (*p && *p != '"' && i + 1 < len)
		out[i++] = *p++;
	out[i] = 0;
	return *p == '"' ? 0 : -1;
}

/* The integer value of "key" in a JSON object. */
static int json_int(const char *obj, const char *key, long long *out)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	const char *p = strstr(obj, pattern);
	if (!p)
		return -1;
	p += strlen(pattern);
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != ':')
		return -1;
	char *end;
	errno = 0;
	*out = strtoll(p, &end, 10);
	return (end == p || errno) ? -1 : 0;
}

static int writer_pid(void)
{
	char buf[32] = {0};
	int fd = open(WRITER_PID, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	int pid = n > 0 ? atoi(buf) : -1;
	return (pid > 1 && kill(pid, 0) == 0) ? pid : -1;
}

/* Waits until the writer's acknowledgement file exists (want=1) or is gone
 * (want=0).  Returns 0, or -1 after ACK_TIMEOUT_MS. */
static int wait_ack(int want)
{
	struct stat st;
	for (int waited = 0; waited < ACK_TIMEOUT_MS; waited += 5) {
		if ((stat(WRITER_FROZEN, &st) == 0) == want)
			return 0;
		sleep_ms(5);
	}
	return -1;
}

static int read_ack_count(void)
{
	char buf[32] = {0};
	int fd = open(WRITER_FROZEN, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoi(buf) : 0;
}

static void do_freeze(void)
{
	if (frozen) {
		reply("{\"error\": {\"class\": \"GenericError\", \"desc\": "
		      "\"the filesystems are already frozen\"}}");
		return;
	}
	sync();
	int pid = writer_pid(), count = 0;
	if (pid > 0) {
		kill(pid, SIGUSR1);
		if (wait_ack(1) != 0) {
			kill(pid, SIGUSR2);
			reply("{\"error\": {\"class\": \"GenericError\", \"desc\": "
			      "\"the writer did not stop within %d ms\"}}",
			      ACK_TIMEOUT_MS);
			return;
		}
		count = read_ack_count();
	}
	frozen = 1;
	frozen_count = count;
	reply("{\"return\": %d}", count);
}

static void do_thaw(void)
{
	if (!frozen) {
		reply("{\"return\": 0}");
		return;
	}
	int pid = writer_pid();
	if (pid > 0) {
		kill(pid, SIGUSR2);
		if (wait_ack(0) != 0) {
			reply("{\"error\": {\"class\": \"GenericError\", \"desc\": "
			      "\"the writer did not resume within %d ms\"}}",
			      ACK_TIMEOUT_MS);
			return;
		}
	}
	frozen = 0;
	reply("{\"return\": %d}", frozen_count);
}

static void handle(const char *obj)
{
	char command[128];
	long long id = 0;
	if (json_string(obj, "execute", command, sizeof(command)) != 0) {
		reply("{\"error\": {\"class\": \"GenericError\", \"desc\": "
		      "\"Invalid JSON syntax or no execute member\"}}");
		return;
	}
	if (strcmp(command, "guest-sync-delimited") == 0 || strcmp(command, "guest-sync") == 0) {
		const char *args = strstr(obj, "\"arguments\"");
		if (!args || json_int(args, "id", &id) != 0) {
			reply("{\"error\": {\"class\": \"GenericError\", "
			      "\"desc\": \"Parameter 'id' is missing\"}}");
			return;
		}
		if (strcmp(command, "guest-sync-delimited") == 0)
			reply_raw("\xff", 1);
		reply("{\"return\": %lld}", id);
	} else if (strcmp(command, "guest-ping") == 0) {
		reply("{\"return\": {}}");
	} else if (strcmp(command, "guest-fsfreeze-freeze") == 0) {
		do_freeze();
	} else if (strcmp(command, "guest-fsfreeze-thaw") == 0) {
		do_thaw();
	} else if (strcmp(command, "guest-fsfreeze-status") == 0) {
		reply("{\"return\": \"%s\"}", frozen ? "frozen" : "thawed");
	} else {
		reply("{\"error\": {\"class\": \"CommandNotFound\", "
		      "\"desc\": \"The command %s has not been found\"}}",
		      command);
	}
}

/* Splits the byte stream into top-level JSON objects. */
static char request[MAX_REQUEST];
static size_t request_len;
static int depth, in_string, escaped;

static void parser_reset(void)
{
	request_len = 0;
	depth = in_string = escaped = 0;
}

static void feed(unsigned char c)
{
	if (c == 0xFF) {
		parser_reset();
		return;
	}
	if (depth == 0 && c != '{')
		return; /* whitespace or junk between objects */
	if (request_len + 1 >= sizeof(request)) {
		parser_reset();
		reply("{\"error\": {\"class\": \"GenericError\", \"desc\": \"request too long\"}}");
		return;
	}
	request[request_len++] = (char)c;
	if (in_string) {
		if (escaped)
			escaped = 0;
		else if (c == '\\')
			escaped = 1;
		else if (c == '"')
			in_string = 0;
		return;
	}
	if (c == '"')
		in_string = 1;
	else if (c == '{' || c == '[')
		depth++;
	else if ((c == '}' || c == ']') && --depth == 0) {
		request[request_len] = 0;
		handle(request);
		parser_reset();
	}
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (agent_disabled()) {
		say("AGENT off");
		return 0;
	}
	char dev[256], path[300];
	int waited = 0;
	while (find_port(dev, sizeof(dev)) != 0) {
		if (waited++ >= PORT_WAIT_S * 10) {
			say("AGENT no port " PORT_NAME);
			return 1;
		}
		sleep_ms(100);
	}
	snprintf(path, sizeof(path), "/dev/%s", dev);
	while ((port_fd = open(path, O_RDWR | O_CLOEXEC)) < 0) {
		if (waited++ >= PORT_WAIT_S * 10) {
			say("AGENT cannot open /dev/%s errno=%d", dev, errno);
			return 1;
		}
		sleep_ms(100);
	}
	say("AGENT ready port=%s", dev);
	unsigned char buf[4096];
	for (;;) {
		struct pollfd p = {port_fd, POLLIN, 0};
		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			sleep_ms(100);
			continue;
		}
		ssize_t n = read(port_fd, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			/* No host client connected (EOF, POLLHUP): look again later. */
			sleep_ms(50);
			continue;
		}
		for (ssize_t i = 0; i < n; i++)
			feed(buf[i]);
	}
}
