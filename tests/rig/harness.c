/*
 * rig — a simulated Arduino Uno (or Mega 2560) for rerod's tests.
 *
 * An ATmega328P at 16 MHz (libsimavr) running the real Optiboot bootloader,
 * or with --mcu atmega2560 an ATmega2560 at 16 MHz running the Mega's
 * stk500v2 bootloader, with UART0 bridged to a pseudo-terminal by simavr's
 * uart_pty part.
 *
 *   rig --bootloader boot.hex [--app prog.hex] --link PATH [--mcu NAME]
 *       [--boot-addr 0x7c00] [--reset-on-open] [--no-throttle] [-v]
 *
 * PATH becomes a symlink to the pty slave; "ready PATH" is printed on stdout
 * once it exists.  SIGUSR1 = external reset (what the board's DTR line does),
 * SIGTERM / SIGINT / SIGHUP = remove the link and exit.
 * See README.md next to this file for the why of every odd step below.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <sim_avr.h>
#include <sim_hex.h>
#include <sim_regbit.h>
#include <avr_uart.h>
#include <uart_pty.h>

/* Both boards run at 16 MHz. */
#define MCU_FREQ 16000000UL
/* Data-space address of MCUSR: I/O 0x34 on the m328p and on the m2560. */
#define MCUSR_ADDR 0x54
#define BIT_PORF 0
#define BIT_EXTRF 1

/* cycles simulated between two looks at the clock / signals / pty (1 ms) */
#define SLICE_CYCLES (MCU_FREQ / 1000)
/* if the host falls this far behind real time, stop trying to catch up */
#define MAX_LAG_NS 100000000LL

/* The MCUs the rig knows, and where each one's bootloader starts by default
 * (the boot section the board's BOOTRST/BOOTSZ fuses select). */
struct mcu_info {
	const char *name;
	avr_flashaddr_t boot_addr;
};

static const struct mcu_info g_mcus[] = {
	/* Uno: Optiboot rebuilt for a 1 KB boot section (see README) */
	{ "atmega328p", 0x7c00 },
	/* Mega 2560: the 8 KB boot section of stk500boot_v2_mega2560.hex */
	{ "atmega2560", 0x3e000 },
};

static volatile sig_atomic_t g_quit;
static volatile sig_atomic_t g_reset_req;
/* SIGUSR2: power off and on again; SIGWINCH: the board latches up */
static volatile sig_atomic_t g_power_req;
static volatile sig_atomic_t g_wedge_req;

static int g_verbose;
static avr_t *g_avr;
static uart_pty_t g_pty;
static avr_flashaddr_t g_boot_addr;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		g_reset_req = 1;
	else if (sig == SIGUSR2)
		g_power_req = 1;
	else if (sig == SIGWINCH)
		g_wedge_req = 1;
	else
		g_quit = 1;
}

static void msg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("rig: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

#define VMSG(...) do { if (g_verbose) msg(__VA_ARGS__); } while (0)

/* simavr writes warnings and traces to stdout by default; stdout is ours */
static void quiet_logger(avr_t *avr, const int level, const char *fmt, va_list ap)
{
	(void)avr;
	if (level <= LOG_ERROR || g_verbose > 1)
		vfprintf(stderr, fmt, ap);
}

/* the default raw-mode sleep callback usleep()s; our throttle handles time */
static void no_sleep(avr_t *avr, avr_cycle_count_t how_long)
{
	(void)avr;
	(void)how_long;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rig --bootloader FILE.hex [--app FILE.hex] --link PATH\n"
		"           [--mcu NAME] [--boot-addr ADDR] [--reset-on-open]\n"
		"           [--no-throttle] [-v]\n"
		"  --bootloader  Intel hex of the bootloader (linked at ADDR)\n"
		"  --app         Intel hex loaded at its own addresses (normally 0)\n"
		"  --link        symlink to create, pointing at the pty slave\n"
		"  --mcu         atmega328p (Uno, default) or atmega2560 (Mega 2560)\n"
		"  --boot-addr   byte address the MCU starts at on reset\n"
		"                (atmega328p: 0x7c00, atmega2560: 0x3e000)\n"
		"  --reset-on-open  external reset whenever the pty goes from closed\n"
		"                to opened (like the Uno's DTR auto-reset)\n"
		"  --no-throttle run as fast as the host can (Optiboot timeouts shrink)\n"
		"  -v            log resets/opens on stderr (-vv: simavr traces too)\n"
		"signals: SIGUSR1 = external reset; SIGUSR2 = power cycle;\n"
		"         SIGWINCH = latch up (resets ignored until a power cycle);\n"
		"         SIGTERM/SIGINT/SIGHUP = exit\n");
}

static int load_hex(const char *path, const char *what)
{
	ihex_chunk_p chunks = NULL;
	int n = read_ihex_chunks(path, &chunks);
	if (n <= 0) {
		msg("cannot read %s hex '%s'", what, path);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		uint32_t end = chunks[i].baseaddr + chunks[i].size;
		if (end > g_avr->flashend + 1) {
			msg("%s '%s': chunk 0x%x+%u past end of flash", what, path,
			    chunks[i].baseaddr, chunks[i].size);
			free_ihex_chunks(chunks);
			return -1;
		}
		avr_loadcode(g_avr, chunks[i].data, chunks[i].size, chunks[i].baseaddr);
		VMSG("%s: %u bytes at 0x%04x", what, chunks[i].size, chunks[i].baseaddr);
	}
	free_ihex_chunks(chunks);
	return 0;
}

static void uart_tune(void)
{
	uint32_t f = 0;
	avr_ioctl(g_avr, AVR_IOCTL_UART_GET_FLAGS('0'), &f);
	/* POLL_SLEEP makes every empty read of UCSR0A usleep(): Optiboot polls
	 * it in a tight loop, so it would crawl.  STDIO would echo to stdout. */
	f &= ~(uint32_t)(AVR_UART_FLAG_POLL_SLEEP | AVR_UART_FLAG_STDIO);
	avr_ioctl(g_avr, AVR_IOCTL_UART_SET_FLAGS('0'), &f);
}

static void set_mcusr(uint8_t bit)
{
	/* avr_reset() leaves whatever it likes in MCUSR; we want exactly one
	 * cause so that Optiboot decides like the real chip would. */
	g_avr->data[MCUSR_ADDR] = (uint8_t)(1u << bit);
}

static void drop_host_to_board(void);

/* external reset (RESET pin low) when ext != 0, power-on reset otherwise */
static void mcu_reset(int ext)
{
	drop_host_to_board();
	avr_reset(g_avr);
	g_avr->pc = g_boot_addr;
	set_mcusr(ext ? BIT_EXTRF : BIT_PORF);
	g_avr->state = cpu_Running;
	uart_tune();
}

/* ---- pty side ---------------------------------------------------------- */

static int g_slave_fd = -1;   /* our own handle on the slave */
static int g_ino_fd = -1;     /* inotify on the slave device node */
static int g_openers;         /* other processes that have the slave open */
static int g_preseen_opens;   /* opens counted from /proc before their event was read */

static void slave_make_raw(void)
{
	struct termios tio;
	if (tcgetattr(g_slave_fd, &tio) == 0) {
		cfmakeraw(&tio);
		cfsetispeed(&tio, B115200);
		cfsetospeed(&tio, B115200);
		tio.c_cflag |= CLOCAL | CREAD;
		tcsetattr(g_slave_fd, TCSANOW, &tio);
	}
}

/* Counts the descriptors other processes hold on the slave, by walking
 * /proc/PID/fd (stat() on those links opens nothing, so inotify stays
 * quiet).  *blind is set when some process could not be inspected. */
static int count_openers(int *blind)
{
	struct stat me;
	int n = 0;
	*blind = 0;
	if (fstat(g_slave_fd, &me) != 0)
		return -1;
	DIR *proc = opendir("/proc");
	if (!proc)
		return -1;
	pid_t self = getpid();
	struct dirent *de;
	while ((de = readdir(proc))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
		DIR *fds = opendir(path);
		if (!fds) {
			if (errno == EACCES)
				*blind = 1;
			continue;
		}
		struct dirent *fe;
		while ((fe = readdir(fds))) {
			struct stat st;
			if (fe->d_name[0] == '.')
				continue;
			if (fstatat(dirfd(fds), fe->d_name, &st, 0) == 0 &&
			    S_ISCHR(st.st_mode) && st.st_rdev == me.st_rdev)
				n++;
		}
		closedir(fds);
	}
	closedir(proc);
	return n;
}

/* Reads inotify.  Returns 1 if the pty just went from nobody to somebody.
 * Opens and closes are counted from the events, but inotify merges two
 * identical events that follow each other unread (two quick closes become
 * one), so after any close the count is taken again from /proc. */
static int poll_openers(void)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int opened = 0, recount = 0, before = g_openers;
	for (;;) {
		ssize_t r = read(g_ino_fd, buf, sizeof(buf));
		if (r <= 0)
			break;
		for (char *p = buf; p < buf + r;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (g_verbose > 1)
				msg("inotify 0x%x openers %d", ev->mask, g_openers);
			if (ev->mask & IN_OPEN) {
				if (g_preseen_opens > 0)
					g_preseen_opens--;
				else if (g_openers++ == 0)
					opened = 1;
			}
			if (ev->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_Q_OVERFLOW)) {
				if (g_openers > 0)
					g_openers--;
				recount = 1;
			}
			p += sizeof(*ev) + ev->len;
		}
	}
	if (!recount)
		return opened;
	int blind;
	int n = count_openers(&blind);
	if (n >= 0 && !(blind && n < g_openers)) {
		/* A client that opens right after the last one closed can be in
		 * /proc before its open event is read: that is a new session
		 * (reset now), and its event, when it comes, is already counted. */
		if (g_openers == 0 && n > 0) {
			g_preseen_opens += n;
			opened = 1;
		}
		g_openers = n;
	}
	if (g_openers == 0 && (before > 0 || opened)) {
		/* The tty never really closes (we hold it), so whatever the
		 * last client left behind stays: an exclusive lock (TIOCEXCL,
		 * which serialport sets) and its termios (with echo on, the
		 * board's output would bounce back into its RX).  Undo both. */
		ioctl(g_slave_fd, TIOCNXCL);
		slave_make_raw();
		VMSG("pty closed");
	}
	return opened;
}

/* uart_pty only declares its fifo type; instantiate the accessors here */
DEFINE_FIFO(uint8_t, uart_pty_fifo);

/* Forget every byte on its way from the host to the board.  Used when a new
 * client opens the pty and on every reset: otherwise whatever an earlier
 * client wrote and the board never read (an app that ignores its RX, an
 * uploader killed mid-page) waits in the pty and in uart_pty's buffers and
 * is fed to the next Optiboot session, which then writes garbage pages.
 * Path: kernel pty queue -> bridge thread's read buffer (<= 511 bytes) ->
 * uart_pty 'out' fifo (512, consumed by us, the simulation thread) ->
 * the simulated UART's own 64-byte fifo (cleared by avr_reset). */
static void drop_host_to_board(void)
{
	uart_pty_port_t *port = &g_pty.port[0];
	tcflush(port->s, TCIFLUSH);
	tcflush(g_slave_fd, TCOFLUSH);
	for (int i = 0; i < 100; i++) {
		while (!uart_pty_fifo_isempty(&port->out))
			uart_pty_fifo_read(&port->out);
		__sync_synchronize();
		/* the thread moves its leftover buffer into the fifo as soon
		 * as there is room, within one of its 0.5 ms select rounds */
		if (*(volatile size_t *)&port->buffer_done ==
		    *(volatile size_t *)&port->buffer_len)
			break;
		usleep(100);
	}
	while (!uart_pty_fifo_isempty(&port->out))
		uart_pty_fifo_read(&port->out);
}

/* While nobody listens, throw the board's output away like a real USB
 * serial adapter does, instead of letting the pty queue it for whoever
 * opens next. */
static void drain_if_unheard(void)
{
	char buf[512];
	if (g_openers > 0)
		return;
	while (read(g_slave_fd, buf, sizeof(buf)) > 0)
		;
}

static int make_link(const char *link, const char *target)
{
	char tmp[PATH_MAX];
	struct stat st;
	if (lstat(link, &st) == 0 && !S_ISLNK(st.st_mode)) {
		msg("--link %s exists and is not a symlink", link);
		return -1;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", link, (int)getpid()) >= (int)sizeof(tmp))
		return -1;
	unlink(tmp);
	if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
		msg("cannot create link %s: %s", link, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* remove PATH only if it is a symlink pointing at TARGET */
static void unlink_if_ours(const char *path, const char *target)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return;
	buf[n] = 0;
	if (strcmp(buf, target) == 0)
		unlink(path);
}

int main(int argc, char **argv)
{
	const char *boot_hex = NULL, *app_hex = NULL, *link_path = NULL;
	const char *mcu_name = g_mcus[0].name, *boot_addr_arg = NULL;
	int reset_on_open = 0, throttle = 1;

	static const struct option opts[] = {
		{ "bootloader", required_argument, 0, 'b' },
		{ "app", required_argument, 0, 'a' },
		{ "link", required_argument, 0, 'l' },
		{ "mcu", required_argument, 0, 'm' },
		{ "boot-addr", required_argument, 0, 'B' },
		{ "reset-on-open", no_argument, 0, 'r' },
		{ "no-throttle", no_argument, 0, 'T' },
		{ "verbose", no_argument, 0, 'v' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "b:a:l:m:B:rTvh", opts, NULL)) != -1) {
		switch (c) {
		case 'b': boot_hex = optarg; break;
		case 'a': app_hex = optarg; break;
		case 'l': link_path = optarg; break;
		case 'm': mcu_name = optarg; break;
		case 'B': boot_addr_arg = optarg; break;
		case 'r': reset_on_open = 1; break;
		case 'T': throttle = 0; break;
		case 'v': g_verbose++; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!boot_hex || !link_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	const struct mcu_info *mcu = NULL;
	for (size_t i = 0; i < sizeof(g_mcus) / sizeof(g_mcus[0]); i++)
		if (strcmp(g_mcus[i].name, mcu_name) == 0)
			mcu = &g_mcus[i];
	if (!mcu) {
		msg("--mcu %s: the rig knows atmega328p and atmega2560", mcu_name);
		return 2;
	}
	g_boot_addr = boot_addr_arg ? (avr_flashaddr_t)strtoul(boot_addr_arg, NULL, 0)
				    : mcu->boot_addr;

	/* Signals: the handlers only set flags.  They are blocked while
	 * uart_pty starts its thread so that the thread inherits a mask with
	 * them blocked: a signal landing there would interrupt its select(),
	 * which it treats as fatal, and the bridge would silently die. */
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGWINCH);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGWINCH, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_sigmask(SIG_BLOCK, &block, &old);

	avr_global_logger_set(quiet_logger);
	g_avr = avr_make_mcu_by_name(mcu->name);
	if (!g_avr) {
		msg("simavr does not know %s", mcu->name);
		return 1;
	}
	avr_init(g_avr);
	g_avr->frequency = MCU_FREQ;
	g_avr->sleep = no_sleep;
	g_avr->log = g_verbose > 1 ? LOG_TRACE : LOG_ERROR;

	if (load_hex(boot_hex, "bootloader") != 0)
		return 1;
	if (app_hex && load_hex(app_hex, "app") != 0)
		return 1;
	/* a bootloader is present: let jumps anywhere in flash be legal */
	g_avr->codeend = g_avr->flashend;
	g_avr->reset_pc = g_boot_addr;

	/* No tap pty, no xterm: only the one bridge. */
	unsetenv("SIMAVR_UART_TAP");
	unsetenv("SIMAVR_UART_XTERM");
	/* uart_pty chats on stdout; keep stdout for our "ready" line only */
	fflush(stdout);
	int saved_stdout = dup(STDOUT_FILENO);
	dup2(STDERR_FILENO, STDOUT_FILENO);
	uart_pty_init(g_avr, &g_pty);
	uart_pty_connect(&g_pty, '0');
	fflush(stdout);
	dup2(saved_stdout, STDOUT_FILENO);
	close(saved_stdout);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	const char *slave = g_pty.port[0].slavename;
	if (!g_pty.port[0].s || !slave[0]) {
		msg("uart_pty could not create a pty");
		return 1;
	}
	/* uart_pty_connect() always points /tmp/simavr-uart0 at the newest
	 * pty; it is shared between all rigs, so take ours back out. */
	unlink_if_ours("/tmp/simavr-uart0", slave);

	/* Our own handle keeps the slave side alive (uart_pty leaks one too,
	 * but do not depend on that) and lets us flush/reset it.  Open it
	 * BEFORE the watch so it does not count as a client. */
	g_slave_fd = open(slave, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (g_slave_fd < 0) {
		msg("cannot open %s: %s", slave, strerror(errno));
		return 1;
	}
	slave_make_raw();
	g_ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (g_ino_fd < 0 ||
	    inotify_add_watch(g_ino_fd, slave, IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE) < 0) {
		msg("inotify on %s failed: %s", slave, strerror(errno));
		return 1;
	}

	mcu_reset(0); /* power on */

	if (make_link(link_path, slave) != 0)
		return 1;
	msg("%s, pty %s, link %s, boot at 0x%04x%s", mcu->name, slave, link_path,
	    (unsigned)g_boot_addr,
	    reset_on_open ? ", reset on open" : "");
	printf("ready %s\n", link_path);
	fflush(stdout);

	int parked = 0;
	/* latched up (SIGWINCH): the core stops and ignores every reset until
	 * its power is cycled, like a board only a USB power cycle revives */
	int wedged = 0;
	int64_t base_t = now_ns();
	avr_cycle_count_t base_cycle = g_avr->cycle;

	while (!g_quit) {
		int reset = 0, power_on = 0;
		if (g_wedge_req) {
			g_wedge_req = 0;
			wedged = 1;
			msg("SIGWINCH: latched up; only a power cycle (SIGUSR2) revives it");
		}
		if (g_power_req) {
			g_power_req = 0;
			/* off long enough for a host to see the board gone quiet */
			struct timespec off = { 0, 300000000 };
			nanosleep(&off, NULL);
			wedged = 0;
			power_on = 1;
			msg("SIGUSR2: power cycled");
		}
		if (g_reset_req) {
			g_reset_req = 0;
			reset = !wedged;
			VMSG("SIGUSR1: external reset%s", wedged ? " ignored (latched up)" : "");
		}
		if (poll_openers()) {
			/* drop anything the board said before this client came */
			tcflush(g_slave_fd, TCIFLUSH);
			if (!reset_on_open)
				drop_host_to_board();
			VMSG("pty opened%s", reset_on_open ? ": external reset" : "");
			if (reset_on_open && !wedged)
				reset = 1;
		}
		drain_if_unheard();
		if (reset || power_on) {
			mcu_reset(reset ? 1 : 0);
			if (parked)
				msg("reset: running again");
			parked = 0;
			base_t = now_ns();
			base_cycle = g_avr->cycle;
		}

		if (parked || wedged) {
			/* a crashed / halted / latched-up core: stay alive, wait for a reset */
			struct timespec ts = { 0, 2000000 };
			nanosleep(&ts, NULL);
			continue;
		}

		avr_cycle_count_t until = g_avr->cycle + SLICE_CYCLES;
		while (g_avr->cycle < until) {
			int st = avr_run(g_avr);
			if (st == cpu_Done || st == cpu_Crashed || st == cpu_Stopped) {
				msg("core %s at pc 0x%04x; parked until reset",
				    st == cpu_Done ? "halted" : "crashed", (unsigned)g_avr->pc);
				parked = 1;
				break;
			}
		}
		if (parked || !throttle)
			continue;

		/* keep simulated time in step with the wall clock */
		int64_t sim_ns = (int64_t)((double)(g_avr->cycle - base_cycle) * 1e9 / MCU_FREQ);
		int64_t ahead = sim_ns - (now_ns() - base_t);
		if (ahead > 0) {
			struct timespec ts = { ahead / 1000000000LL, ahead % 1000000000LL };
			nanosleep(&ts, NULL);
		} else if (-ahead > MAX_LAG_NS) {
			base_t = now_ns();
			base_cycle = g_avr->cycle;
		}
	}

	unlink_if_ours(link_path, slave);
	msg("exit");
	return 0;
}
