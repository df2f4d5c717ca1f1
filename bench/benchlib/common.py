"""What bench/run and its scenarios share: paths, running commands,
installing Postfix without starting it, the release build, fresh loop
mounts, sampling a process tree's memory and CPU, and bounded waits."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench")
BUILD = os.path.join(ROOT, "build-release")
POSTERN = os.path.join(BUILD, "postern")
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
SENDER = "bench@bench.test"
RCPT = "user@bench.test"
MSG_LEN = 4096
SERVERS = ("smtp-sink", "postfix", "postern")
# Not run by default: postern with its metrics endpoint, scraped ten
# times a second while it runs (--servers postern,postern-metrics: the
# cost of metrics, same run; Prometheus scrapes every 15 s or so).
OPTIONAL_SERVERS = ("postern-metrics",)
# Postfix's smtpd has no per-session message or recipient limit.
PER_SESSION_LIMITS = ("limit messages-per-session 1000000\n"
    "limit recipients-per-session 1000000\n")
LABEL = {"smtp-sink": "smtp-sink", "postfix": "Postfix", "postern": "postern",
    "postern-metrics": "postern+metrics"}


def log(msg):
	print("bench: " + msg, file=sys.stderr, flush=True)


def die(msg):
	log("fatal: " + msg)
	sys.exit(1)


def sh(argv, timeout=120, check=True, **kw):
	"""Run argv with a time limit; return the CompletedProcess."""
	r = subprocess.run(argv, timeout=timeout, capture_output=True,
	    text=True, **kw)
	if check and r.returncode != 0:
		raise RuntimeError("%s: exit %d: %s" % (" ".join(argv),
		    r.returncode, (r.stderr or r.stdout).strip()[-2000:]))
	return r


# ---------------------------------------------------------------- install

def default_postfix_running():
	"""The system instance's master pid if it runs, else None."""
	try:
		with open("/var/spool/postfix/pid/master.pid") as f:
			pid = int(f.read().split()[0])
		os.kill(pid, 0)
		return pid
	except (OSError, ValueError, IndexError):
		return None


def ensure_packages():
	"""Install postfix (smtp-source, smtp-sink) without starting it."""
	need = []
	if not (os.access(SMTP_SOURCE, os.X_OK) and
	    os.access(SMTP_SINK, os.X_OK) and os.access(POSTFIX, os.X_OK)):
		need.append("postfix")
	if shutil.which("meson") is None:
		need.append("meson")
	if shutil.which("ninja") is None:
		need.append("ninja-build")
	if not need:
		return
	log("installing " + " ".join(need))
	env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
	sh(["debconf-set-selections"], input="postfix postfix/main_mailer_type "
	    "select No configuration\n", timeout=60)
	# policy-rc.d exiting 101 forbids invoke-rc.d to start the service the
	# package installs; keep any existing one and put it back afterwards.
	prc = "/usr/sbin/policy-rc.d"
	saved = None
	if os.path.exists(prc):
		with open(prc, "rb") as f:
			saved = (f.read(), os.stat(prc).st_mode)
	was_running = default_postfix_running()
	try:
		with open(prc, "w") as f:
			f.write("#!/bin/sh\n# bench/run: no service starts\nexit 101\n")
		os.chmod(prc, 0o755)
		cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
		r = sh(cmd + need, timeout=900, check=False, env=env)
		if r.returncode != 0:
			sh(["apt-get", "update", "-q"], timeout=600, env=env)
			sh(cmd + need, timeout=900, env=env)
	finally:
		if saved is None:
			os.unlink(prc)
		else:
			with open(prc, "wb") as f:
				f.write(saved[0])
			os.chmod(prc, saved[1] & 0o7777)
	pid = default_postfix_running()
	if pid and not was_running:
		log("the system postfix started during install; stopping it")
		sh([POSTFIX, "stop"], timeout=60, check=False)


# ------------------------------------------------------------------ build

def build_postern():
	"""Build a release postern; return None or the reason it failed."""
	try:
		if not os.path.exists(os.path.join(BUILD, "build.ninja")):
			sh(["meson", "setup", BUILD, "-Db_sanitize=none",
			    "-Dbuildtype=release", "-Dtests=disabled"],
			    timeout=300, cwd=ROOT)
		sh(["ninja", "-C", BUILD, "postern"], timeout=900, cwd=ROOT)
	except (RuntimeError, subprocess.TimeoutExpired) as e:
		return str(e).strip().splitlines()[-1][:300] if str(e) else "build"
	if not os.access(POSTERN, os.X_OK):
		return "no binary " + POSTERN
	return None


# ----------------------------------------------------------------- mounts

class Mount:
	"""A fresh journaled ext4 on a loop device with direct I/O."""

	def __init__(self, workdir, size):
		self.img = os.path.join(workdir, "fs.img")
		self.path = os.path.join(workdir, "mnt")
		self.size = size
		self.dev = None
		self.mounted = False

	def __enter__(self):
		try:
			return self.open()
		except BaseException:
			self.close()	# a half-made mount, e.g. on SIGINT
			raise

	def open(self):
		os.makedirs(self.path, exist_ok=True)
		with open(self.img, "wb") as f:
			f.truncate(self.size)
		# Initialise the inode tables and journal now, so the kernel's
		# lazy-init thread does not write behind the benchmark's back.
		sh(["mkfs.ext4", "-q", "-F", "-E",
		    "lazy_itable_init=0,lazy_journal_init=0", self.img],
		    timeout=300)
		self.dev = sh(["losetup", "--direct-io=on", "-f", "--show",
		    self.img], timeout=60).stdout.strip()
		sh(["mount", "-t", "ext4", self.dev, self.path], timeout=60)
		self.mounted = True
		return self

	def __exit__(self, *exc):
		self.close()

	def close(self):
		if self.mounted:
			for _ in range(20):
				r = sh(["umount", self.path], timeout=60,
				    check=False)
				if r.returncode == 0:
					break
				time.sleep(0.5)
			else:
				log("warning: cannot unmount %s: %s" %
				    (self.path, r.stderr.strip()))
				sh(["umount", "-l", self.path], timeout=60,
				    check=False)
			self.mounted = False
		if self.dev:
			sh(["losetup", "-d", self.dev], timeout=60, check=False)
			self.dev = None
		if os.path.exists(self.img):
			os.unlink(self.img)


# ----------------------------------------------------------------- memory

def proc_children():
	"""Map ppid -> [pid] over every process."""
	kids = {}
	for d in os.listdir("/proc"):
		if not d.isdigit():
			continue
		try:
			with open("/proc/%s/stat" % d) as f:
				s = f.read()
		except OSError:
			continue
		ppid = int(s[s.rindex(")") + 2:].split()[1])
		kids.setdefault(ppid, []).append(int(d))
	return kids


def tree(root):
	kids = proc_children()
	out, todo = [], [root]
	while todo:
		p = todo.pop()
		out.append(p)
		todo.extend(kids.get(p, []))
	return out


def status_kb(pid, keys):
	vals = {}
	try:
		with open("/proc/%d/status" % pid) as f:
			for line in f:
				k = line.split(":", 1)[0]
				if k in keys:
					vals[k] = int(line.split()[1])
	except OSError:
		pass
	return vals


def cpu_ticks(pid):
	"""utime + stime of one process (all its threads), in clock ticks."""
	try:
		with open("/proc/%d/stat" % pid) as f:
			s = f.read()
	except OSError:
		return 0
	f = s[s.rindex(")") + 2:].split()
	return int(f[11]) + int(f[12])


def pss_kb(pid):
	try:
		with open("/proc/%d/smaps_rollup" % pid) as f:
			for line in f:
				if line.startswith("Pss:"):
					return int(line.split()[1])
	except OSError:
		pass
	return 0


class MemSampler(threading.Thread):
	"""Every 100 ms: the sum of VmRSS over the server's process tree; the
	peak is the largest such sum.  Every 10th sample also sums Pss, which
	shares each shared page out among the processes mapping it (fairer to
	a multi-process server such as Postfix).  Also keeps the largest
	VmHWM seen for each pid (their sum bounds the peak from above), and
	each pid's last utime+stime: their sum is the server's CPU time (a
	slight undercount for processes that exit between two samples)."""

	def __init__(self, rootpid_fn):
		super().__init__(daemon=True)
		self.rootpid_fn = rootpid_fn
		self.stop_ev = threading.Event()
		self.peak_rss = 0
		self.peak_pss = 0
		self.hwm = {}
		self.cpu = {}
		self.nproc_peak = 0

	def run(self):
		n = 0
		while not self.stop_ev.is_set():
			self.sample(n % 10 == 0)
			n += 1
			self.stop_ev.wait(0.1)
		self.sample(True)

	def sample(self, with_pss):
		root = self.rootpid_fn()
		if not root:
			return
		pids = tree(root)
		rss = 0
		pss = 0
		for p in pids:
			v = status_kb(p, ("VmRSS", "VmHWM"))
			rss += v.get("VmRSS", 0)
			if v.get("VmHWM", 0) > self.hwm.get(p, 0):
				self.hwm[p] = v["VmHWM"]
			if with_pss:
				pss += pss_kb(p)
			t = cpu_ticks(p)
			if t > self.cpu.get(p, 0):
				self.cpu[p] = t
		self.peak_rss = max(self.peak_rss, rss)
		self.peak_pss = max(self.peak_pss, pss)
		self.nproc_peak = max(self.nproc_peak, len(pids))

	def stop(self):
		self.stop_ev.set()
		self.join(10)
		return {"rss": self.peak_rss, "pss": self.peak_pss,
		    "hwm_sum": sum(self.hwm.values()), "nproc": self.nproc_peak,
		    "cpu_s": sum(self.cpu.values()) /
		    os.sysconf("SC_CLK_TCK")}


# ---------------------------------------------------------------- helpers

def free_port():
	with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def wait_banner(port, deadline_s, alive=lambda: True):
	"""Wait until 127.0.0.1:port answers with a 220 greeting."""
	end = time.monotonic() + deadline_s
	while time.monotonic() < end:
		if not alive():
			return False
		try:
			with socket.create_connection(("127.0.0.1", port),
			    timeout=2) as s:
				s.settimeout(5)
				if s.recv(512).startswith(b"220"):
					try:
						s.sendall(b"QUIT\r\n")
						s.recv(512)
					except OSError:
						pass
					return True
		except OSError:
			pass
		time.sleep(0.1)
	return False


def count_new(base):
	"""Number of files in every Maildir new/ and cur/ below base."""
	n = 0
	for dirpath, dirnames, filenames in os.walk(base):
		leaf = os.path.basename(dirpath)
		if leaf in ("new", "cur"):
			n += len(filenames)
	return n


def wait_count(base, want, deadline_s, stall_s):
	"""Wait until count_new(base) >= want, the deadline, or no change for
	stall_s seconds; return the count and the monotonic time it was
	reached (None when it was not)."""
	end = time.monotonic() + deadline_s
	last, stable_since = -1, time.monotonic()
	while True:
		n = count_new(base)
		now = time.monotonic()
		if n >= want:
			# A short settle to notice duplicates, then report.
			time.sleep(0.3)
			return count_new(base), now
		if n != last:
			last, stable_since = n, now
		if now > end or now - stable_since > stall_s:
			return n, None
		time.sleep(0.05)


def kill_pid(pid, sig=signal.SIGTERM, wait_s=15):
	"""Signal one process we started and wait for it to go."""
	try:
		os.kill(pid, sig)
	except ProcessLookupError:
		return True
	end = time.monotonic() + wait_s
	while time.monotonic() < end:
		try:
			r, _ = os.waitpid(pid, os.WNOHANG)
			if r == pid:
				return True
		except ChildProcessError:
			try:
				os.kill(pid, 0)
			except ProcessLookupError:
				return True
		time.sleep(0.05)
	return False

