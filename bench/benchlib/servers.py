"""The servers bench/run compares, each on a fresh mount: smtp-sink (and
bench/tools/tlssink for STARTTLS), postern (and, when asked for, postern
with its metrics endpoint scraped), and a private Postfix instance.  Each
takes an opts dict for what a scenario changes."""

import os
import pwd
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time

from benchlib.common import (POSTERN, POSTCONF, POSTFIX, SMTP_SINK,
    PER_SESSION_LIMITS, free_port, kill_pid, log, sh, wait_banner)

# postern-metrics fetches /metrics this often while a cell runs.
SCRAPE_EVERY_S = 0.1


def nofile_raiser(n):
	"""A preexec_fn raising the child's descriptor limit to n (None: as
	it is)."""
	if not n:
		return None

	def raise_it():
		soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
		resource.setrlimit(resource.RLIMIT_NOFILE,
		    (max(soft, n), max(hard, n)))
	return raise_it

class Sink:
	"""smtp-sink: the SMTP dialogue alone, messages discarded."""
	name = "smtp-sink"

	def __init__(self, mnt, opts=None):
		self.mnt = mnt
		self.opts = opts or {}
		self.proc = None
		self.port = free_port()
		self.mailbase = None

	def argv(self):
		return [SMTP_SINK, "-c", "-u", "nobody", "-m",
		    str(self.opts.get("sessions", 1000)),
		    "127.0.0.1:%d" % self.port, "1024"]

	def start(self):
		self.out = open(os.path.join(self.mnt, "sink.out"), "w")
		self.proc = subprocess.Popen(self.argv(),
		    stdout=self.out, stderr=subprocess.STDOUT,
		    stdin=subprocess.DEVNULL,
		    preexec_fn=nofile_raiser(self.opts.get("nofile")))
		if not wait_banner(self.port, 15,
		    lambda: self.proc.poll() is None):
			raise RuntimeError("%s did not answer" % self.name)

	def rootpid(self):
		return self.proc.pid if self.proc else None

	def received(self):
		"""The message count smtp-sink's -c counters last showed."""
		time.sleep(0.2)
		return self.count()

	def count(self):
		try:
			with open(os.path.join(self.mnt, "sink.out")) as f:
				text = f.read()
		except OSError:
			return None
		# Counters look like "sess=N quit=N mesg=N"; take the last.
		i = text.rfind("mesg=")
		if i >= 0:
			num = text[i + 5:].split()[0] if text[i + 5:].split() \
			    else ""
			if num.isdigit():
				return int(num)
		return None

	def stop(self):
		if self.proc and self.proc.poll() is None:
			if not kill_pid(self.proc.pid):
				kill_pid(self.proc.pid, signal.SIGKILL)
		self.proc = None
		self.out.close()


class TlsSink(Sink):
	"""bench/tools/tlssink: the dialogue with STARTTLS, messages dropped
	(smtp-sink has no TLS); it prints "mesg=N" as smtp-sink -c does."""
	name = "tls-sink"

	def argv(self):
		return [self.opts["tools"]["tlssink"], "-c", self.opts["cert"],
		    "-k", self.opts["key"], "127.0.0.1:%d" % self.port]


class Postern:
	"""postern with its spool, Maildirs and log on the mount.  opts:
	"binary", "rules" (actions and match rules in place of the Maildir
	ones), "extra" (more statements), "files" (name: text, written
	beside the config), "cert"/"key" (STARTTLS), "nofile"."""
	name = "postern"

	def __init__(self, mnt, opts=None):
		self.mnt = mnt
		self.opts = opts or {}
		self.binary = self.opts.get("binary", POSTERN)
		self.dir = os.path.join(mnt, "postern")
		self.port = free_port()
		self.mailbase = os.path.join(self.dir, "mail")
		self.proc = None

	def start(self):
		os.makedirs(self.mailbase)
		os.makedirs(os.path.join(self.dir, "spool"))
		for name, text in self.opts.get("files", {}).items():
			with open(os.path.join(self.dir, name), "w") as f:
				f.write(text)
		self.conf = os.path.join(self.dir, "postern.conf")
		# A benchmark sends every message over one session with -d:
		# lift the per-session limits where this postern has them
		# (older builds reject the statement, so check and fall back).
		for extra in (PER_SESSION_LIMITS, ""):
			self.write_conf(extra)
			r = sh([self.binary, "check", "-c", self.conf], timeout=30,
			    check=False, preexec_fn=nofile_raiser(
			    self.opts.get("nofile")))
			if r.returncode == 0:
				break
		if r.returncode != 0:
			raise RuntimeError("postern check: " +
			    (r.stdout + r.stderr).strip())
		self.log = open(os.path.join(self.dir, "postern.log"), "w")
		self.proc = subprocess.Popen([self.binary, "run", "-c",
		    self.conf], stdout=self.log, stderr=subprocess.STDOUT,
		    stdin=subprocess.DEVNULL, cwd=self.dir,
		    preexec_fn=nofile_raiser(self.opts.get("nofile")))
		if not wait_banner(self.port, 15,
		    lambda: self.proc.poll() is None):
			raise RuntimeError("postern did not answer; log: " +
			    self.tail())

	def write_conf(self, extra):
		o = self.opts
		conns = o.get("connections", 2000)
		rules = o.get("rules", "action local maildir "
		    "\"%s/%%{rcpt.user}/Maildir\"\n"
		    "match to domain bench.test action local\n" % self.mailbase)
		tls = ("tls cert \"%s\" key \"%s\"\n" % (o["cert"], o["key"])
		    if o.get("cert") else "")
		with open(self.conf, "w") as f:
			f.write(
			    "# written by bench/run\n"
			    "hostname bench.localhost\n"
			    "listen 127.0.0.1:%d\n"
			    "spool \"%s/spool\"\n"
			    "log stderr\n"
			    "log level info\n"
			    "limit connections %d\n"
			    "limit connections-per-ip %d\n"
			    "%s%s%s%s%s"
			    % (self.port, self.dir, conns, conns, extra, tls,
			    o.get("extra", ""), self.conf_extra(), rules))

	def conf_extra(self):
		"""Statements a variant of this server adds."""
		return ""

	def tail(self):
		try:
			with open(os.path.join(self.dir, "postern.log")) as f:
				return " | ".join(f.read().splitlines()[-5:])
		except OSError:
			return ""

	def rootpid(self):
		return self.proc.pid if self.proc else None

	def stop(self):
		if self.proc and self.proc.poll() is None:
			if not kill_pid(self.proc.pid, signal.SIGTERM, 40):
				log("postern ignored SIGTERM; SIGKILL")
				kill_pid(self.proc.pid, signal.SIGKILL)
		self.proc = None
		if getattr(self, "log", None) is not None:	# started at all
			self.log.close()
			self.log = None


class PosternMetrics(Postern):
	"""postern with "metrics listen", its /metrics fetched every
	SCRAPE_EVERY_S while it runs (a Prometheus scrapes every 15 s or so:
	this is the heavy case).  opts as Postern's, and "scrape_out": where
	the last scrape of the cell goes (None: nowhere)."""
	name = "postern-metrics"

	def __init__(self, mnt, opts=None):
		super().__init__(mnt, opts)
		self.mport = free_port()
		self.stop_scrape = threading.Event()
		self.scraper = None
		self.last = None
		self.scrapes = 0

	def conf_extra(self):
		return "metrics listen 127.0.0.1:%d\n" % self.mport

	def scrape(self):
		"""One GET /metrics: the body."""
		with socket.create_connection(("127.0.0.1", self.mport),
		    timeout=10) as s:
			s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
			chunks = []
			while True:
				b = s.recv(65536)
				if not b:
					break
				chunks.append(b)
		text = b"".join(chunks).decode("utf-8", "replace")
		head, _, body = text.partition("\r\n\r\n")
		if not head.startswith("HTTP/1.") or head.split()[1:2] != ["200"]:
			raise OSError("metrics: " + head.split("\r\n")[0][:100])
		return body

	def scrape_loop(self):
		while not self.stop_scrape.wait(SCRAPE_EVERY_S):
			try:
				self.last = self.scrape()
				self.scrapes += 1
			except OSError:
				pass

	def start(self):
		super().start()
		self.scraper = threading.Thread(target=self.scrape_loop,
		    daemon=True)
		self.scraper.start()

	def stop(self):
		if self.scraper is not None:
			self.stop_scrape.set()
			self.scraper.join(30)
			self.scraper = None
			try:	# the counters at the end of the cell
				self.last = self.scrape()
				self.scrapes += 1
			except OSError as e:
				log("postern-metrics: last scrape: %s" % e)
			self.write_scrape()
		super().stop()

	def write_scrape(self):
		out = self.opts.get("scrape_out")
		if out is None or self.last is None:
			return
		with open(out, "w") as f:
			f.write("# the last of %d scrapes, at the end of a cell "
			    "(%s)\n" % (self.scrapes,
			    time.strftime("%Y-%m-%d %H:%M:%S")))
			f.write(self.last)


class Postfix:
	"""A private Postfix instance: its own config and queue directories
	in the mount, started with "postfix -c DIR" (postfix(1): "-c
	config_dir ... Use this to distinguish between multiple Postfix
	instances on the same host").  The live /etc/postfix is not read or
	changed: every parameter that matters is set in DIR/main.cf."""
	name = "postfix"

	def __init__(self, mnt, opts=None):
		self.opts = opts or {}
		self.mnt = mnt
		self.dir = os.path.join(mnt, "postfix")
		self.etc = os.path.join(self.dir, "etc")
		self.queue = os.path.join(self.dir, "queue")
		self.mailbase = os.path.join(self.dir, "mail")
		self.port = free_port()
		self.started = False
		self.master = None

	def postconf(self, *args):
		return sh([POSTCONF, "-c", self.etc] + list(args), timeout=60)

	def start(self):
		os.makedirs(self.etc)
		os.makedirs(self.queue)
		os.makedirs(self.mailbase)
		os.makedirs(os.path.join(self.dir, "data"))
		nobody = 65534
		os.chown(self.mailbase, nobody, nobody)
		# data_directory belongs to mail_owner; the queue directory's
		# subfolders are made by "postfix check" (post-install).
		pw = pwd.getpwnam("postfix")
		os.chown(os.path.join(self.dir, "data"), pw.pw_uid, pw.pw_gid)
		shutil.copy("/etc/postfix/master.cf", self.etc)
		open(os.path.join(self.etc, "main.cf"), "w").close()
		params = {
		    "compatibility_level": "3.6",
		    "myhostname": "bench.localhost",
		    "mydomain": "localhost",
		    "myorigin": "bench.localhost",
		    "inet_interfaces": "127.0.0.1",
		    "inet_protocols": "ipv4",
		    "mynetworks": "127.0.0.0/8",
		    "mydestination": "",
		    "relayhost": "",
		    "alias_maps": "",
		    "alias_database": "",
		    "local_recipient_maps": "",
		    "queue_directory": self.queue,
		    "data_directory": os.path.join(self.dir, "data"),
		    "virtual_mailbox_domains": "bench.test",
		    "virtual_mailbox_base": self.mailbase,
		    # Trailing slash: Maildir, as postern writes.
		    "virtual_mailbox_maps": "static:user/Maildir/",
		    "virtual_uid_maps": "static:%d" % nobody,
		    "virtual_gid_maps": "static:%d" % nobody,
		    "default_process_limit": "200",
		    "smtpd_client_connection_count_limit": "0",
		    "smtpd_client_connection_rate_limit": "0",
		    "smtpd_client_message_rate_limit": "0",
		    "smtpd_peername_lookup": "no",
		    "smtp_host_lookup": "native",
		    "smtp_dns_support_level": "disabled",
		    "lmtp_host_lookup": "native",
		    "maillog_file": os.path.join(self.dir, "maillog"),
		    "maillog_file_prefixes": self.dir,
		    "syslog_name": "postfix-bench",
		    "biff": "no",
		    "append_dot_mydomain": "no",
		    "smtpd_banner": "$myhostname ESMTP Postfix",
		    "smtputf8_enable": "no",
		}
		if self.opts.get("cert_type") == "ecdsa":
			# The key, then its certificate (Postfix 3.4 and later;
			# the one form that takes any key type alone).
			params.update({"smtpd_tls_security_level": "may",
			    "smtpd_tls_chain_files": "%s, %s" % (
			    self.opts["key"], self.opts["cert"])})
		elif self.opts.get("cert"):
			params.update({"smtpd_tls_security_level": "may",
			    "smtpd_tls_cert_file": self.opts["cert"],
			    "smtpd_tls_key_file": self.opts["key"]})
		params.update(self.opts.get("params", {}))
		self.postconf("-e", *("%s=%s" % kv for kv in params.items()))
		# No chroot (it needs files copied into the queue directory);
		# the SMTP listener on a loopback port of our own; no postscreen.
		self.postconf("-F", "*/*/chroot=n")
		self.postconf("-M#", "smtp/inet")
		svc = "127.0.0.1:%d" % self.port
		self.postconf("-M", "%s/inet=%s inet n - n - - smtpd" %
		    (svc, svc))
		self.postfix("check")
		self.postfix("start")
		self.started = True
		if not wait_banner(self.port, 30):
			raise RuntimeError("postfix did not answer; see %s" %
			    os.path.join(self.dir, "maillog"))

	def postfix(self, cmd, check=True):
		"""Run "postfix -c DIR cmd".  Postfix commands log to stderr
		only when it is a terminal, so give them one (script(1)) to
		see why they fail."""
		r = sh(["script", "-qec", "%s -c %s %s" % (POSTFIX,
		    shlex.quote(self.etc), cmd), "/dev/null"], timeout=90,
		    check=False)
		if check and r.returncode != 0:
			raise RuntimeError("postfix %s: %s" % (cmd,
			    " | ".join(r.stdout.strip().splitlines()[-2:] +
			    self.maillog_tail(3))))
		return r

	def maillog_tail(self, n):
		try:
			with open(os.path.join(self.dir, "maillog")) as f:
				return f.read().splitlines()[-n:]
		except OSError:
			return []

	def rootpid(self):
		if self.master:
			return self.master
		try:
			with open(os.path.join(self.queue, "pid",
			    "master.pid")) as f:
				self.master = int(f.read().split()[0])
		except (OSError, ValueError, IndexError):
			return None
		return self.master

	def stop(self):
		if not self.started:
			return
		pid = self.rootpid()
		try:
			self.postfix("stop", check=False)
		except subprocess.SubprocessError as e:
			log("postfix stop: %s" % e)
		end = time.monotonic() + 30
		while pid and time.monotonic() < end:
			try:
				os.kill(pid, 0)
			except ProcessLookupError:
				break
			time.sleep(0.1)
		else:
			if pid:
				log("postfix master %d still there; abort" % pid)
				try:
					self.postfix("abort", check=False)
				except subprocess.SubprocessError:
					pass
				kill_pid(pid, signal.SIGKILL, 5)
		# Its children leave with the master; wait for them briefly.
		end = time.monotonic() + 15
		while time.monotonic() < end and self.leftovers():
			time.sleep(0.1)
		self.started = False

	def leftovers(self):
		"""Processes still running with our config directory."""
		left = []
		for d in os.listdir("/proc"):
			if not d.isdigit():
				continue
			try:
				with open("/proc/%s/cmdline" % d, "rb") as f:
					cmd = f.read()
			except OSError:
				continue
			if self.etc.encode() in cmd or self.queue.encode() in cmd:
				left.append(int(d))
		return left


CLASSES = {"smtp-sink": Sink, "tls-sink": TlsSink, "postfix": Postfix,
    "postern": Postern, "postern-metrics": PosternMetrics}

