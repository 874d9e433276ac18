"""Several machines on one machine: a 3-node NATS cluster and hosts in network namespaces.

`python -m tests.cluster up [--hosts N] [--edge]` starts, and leaves running:

- three nats-servers `n1..n3`, clustered over routes, with JetStream, each in its own
  network namespace with its own address;
- `N` hosts (`lattice up`), each in a namespace of its own with labels `zone` (a, b, …
  round robin) and `arch`, reaching NATS over a veth pair and one bridge. Providers are
  children of their host, so they run in its namespace too;
- two controllers (`lattice controller`: one leads, one stands by), in their namespace;
- with `--edge`, a namespace `edge` holding a leaf-node nats-server whose uplink goes to
  the cluster's leafnode port, and a host that joins through that leaf.

`python -m tests.cluster status` prints what runs and where, `down` stops it and removes
every namespace, veth and bridge of any run whose owner is gone.

Names carry a per-run prefix (`lc` + 4 hex digits: `lc1a2b-n1`, bridge `lc1a2b-br`), and
the addresses a random 10.x.y.0/24, so runs never meet. The test process (and you, by
hand) sit in the root namespace on the bridge's address `.1`: every address is reachable
from there. Faults are made with the network itself: `cut(node)` sets a node's veth
down, `blackhole(a, b)` drops what a sends to b and b to a, `kill(node)` sends SIGKILL.

Without root or without `ip`, `up` says why and falls back to processes on 127.0.0.1
with their own ports (`Cluster.netns` is False, `Cluster.why_loopback` says why); a test
that needs real addresses skips with that reason.

The state of a run is `{workdir}/cluster.json`; the runs live under
`/tmp/lattice-cluster/` (or `LATTICE_CLUSTER_DIR`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lattice import natsd

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path(os.environ.get("LATTICE_CLUSTER_DIR", "/tmp/lattice-cluster"))
PREFIX_RE = re.compile(r"^(lc[0-9a-f]{4})-")
CLIENT_PORT, ROUTE_PORT, LEAF_PORT = 4222, 6222, 7422
JS_DOMAIN = "hub"  # the cluster's JetStream domain, which leaf nodes map their API to


class ClusterError(RuntimeError):
    pass


def netns_unavailable() -> str | None:
    """Why network namespaces can't be made here, or None when they can."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on PATH"
    probe = f"lcprobe{os.getpid() % 10000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ClusterError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done


@dataclass
class Node:
    """One 'machine': a namespace (or none, on loopback) with an address."""

    name: str
    ip: str
    ns: str | None = None  # network namespace; None on loopback
    veth: str | None = None  # the root-side end on the bridge
    port_base: int = 0  # loopback only: client port; routes +1, leafnodes +2

    def port(self, which: int) -> int:
        if self.ns is not None:
            return which
        return self.port_base + {CLIENT_PORT: 0, ROUTE_PORT: 1, LEAF_PORT: 2}[which]

    def url(self, which: int = CLIENT_PORT) -> str:
        return f"nats://{self.ip}:{self.port(which)}"

    def argv(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *args] if self.ns else args


@dataclass
class Proc:
    """A process of the run (nats-server, host, controller) and where it logs."""

    name: str
    node: str
    kind: str  # nats | leaf | host | controller
    argv: list[str]
    log: str
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def _free_port_block(n: int = 3) -> int:
    """A port p with p..p+n-1 free on 127.0.0.1 (loopback fallback)."""
    for _ in range(100):
        base = natsd.free_port()
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise ClusterError("no block of free ports")


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class Cluster:
    """One run: its network, its servers, hosts and controllers; see the module doc."""

    workdir: Path
    prefix: str
    netns: bool
    why_loopback: str | None = None
    subnet: str = "127.0.0"
    lattice: str = "default"
    owner: int = field(default_factory=os.getpid)
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    host_env: dict[str, str] = field(default_factory=dict)
    _popen: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    stopped: bool = field(default=False, repr=False)

    # -- building ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, workdir: Path | None = None, lattice: str = "default", loopback: bool = False
    ) -> Cluster:
        """An empty run with its bridge made (or the reason it falls back to loopback)."""
        prefix = f"lc{secrets.token_hex(2)}"
        why = "asked for loopback" if loopback else netns_unavailable()
        workdir = workdir or RUNS / prefix
        workdir.mkdir(parents=True, exist_ok=True)
        c = cls(workdir=workdir, prefix=prefix, netns=why is None, why_loopback=why)
        c.lattice = lattice
        atexit.register(c._at_exit)
        if c.netns:
            c.subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
            try:
                br = f"{prefix}-br"
                sh("ip", "link", "add", br, "type", "bridge")
                sh("ip", "addr", "add", f"{c.subnet}.1/24", "dev", br)
                sh("ip", "link", "set", br, "up")
            except ClusterError:
                c.remove_network()
                raise
        c.save()
        return c

    @property
    def gateway(self) -> str:
        """The address this process (root namespace) has on the cluster's network."""
        return f"{self.subnet}.1" if self.netns else "127.0.0.1"

    def add_node(self, name: str, index: int) -> Node:
        if name in self.nodes:
            return self.nodes[name]
        if not self.netns:
            node = Node(name, "127.0.0.1", port_base=_free_port_block())
        else:
            ns, veth = f"{self.prefix}-{name}", f"{self.prefix}-{name}"
            peer = f"{self.prefix}-{name}p"
            ip = f"{self.subnet}.{index}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            sh("ip", "link", "set", peer, "netns", ns)
            sh("ip", "link", "set", veth, "master", f"{self.prefix}-br", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", peer)
            sh("ip", "-n", ns, "link", "set", peer, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", self.gateway)
            node = Node(name, ip, ns=ns, veth=veth)
        self.nodes[name] = node
        self.save()
        return node

    def _spawn(self, proc: Proc, env: dict[str, str] | None = None) -> Proc:
        node = self.nodes[proc.node]
        Path(proc.log).parent.mkdir(parents=True, exist_ok=True)
        log = open(proc.log, "ab")  # noqa: SIM115 (handed to the child)
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        p = subprocess.Popen(
            node.argv(proc.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=full_env,
            start_new_session=True,
        )
        log.close()
        proc.pid = p.pid
        self._popen[proc.name] = p
        self.procs[proc.name] = proc
        self.save()
        return proc

    def nats_conf(self, name: str, peers: list[str], leaf_remote: str | None = None) -> Path:
        node = self.nodes[name]
        store = self.workdir / name / "js"
        store.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: {self.prefix}-{name}",
            f"listen: {node.ip}:{node.port(CLIENT_PORT)}",
            # a silent client or route is dropped after ~3 s, not nats' default 4 min
            "ping_interval: 1s",
            "ping_max: 3",
            "write_deadline: 2s",
            "max_payload: 8MB",
        ]
        if leaf_remote is None:
            lines += [
                "jetstream {",
                f"  store_dir: {json.dumps(str(store))}",
                f"  domain: {JS_DOMAIN}",
                "  max_memory_store: 256MB",
                "  max_file_store: 2GB",
                "}",
                "cluster {",
                "  name: lattice",
                f"  listen: {node.ip}:{node.port(ROUTE_PORT)}",
                "  routes: [",
                *(f"    {self.nodes[p].url(ROUTE_PORT)}" for p in peers),
                "  ]",
                "}",
                f"leafnodes {{ listen: {node.ip}:{node.port(LEAF_PORT)} }}",
            ]
        else:
            # A leaf node: no JetStream of its own. nats-server denies the plain JetStream
            # API across a leafnode unless told which domain it means, so `$JS.API.>`
            # from the leaf's clients is mapped to the hub's domain.
            lines += [
                f'default_js_domain: {{ "$G": "{JS_DOMAIN}" }}',
                "leafnodes {",
                '  reconnect: "1s"',
                f"  remotes: [{{ urls: [{leaf_remote}] }}]",
                "}",
            ]
        path = self.workdir / name / "nats.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_nats(self, names: tuple[str, ...] = ("n1", "n2", "n3")) -> None:
        for i, name in enumerate(names):
            self.add_node(name, 11 + i)
        for name in names:
            peers = [p for p in names if p != name]
            conf = self.nats_conf(name, peers)
            log = str(self.workdir / name / "nats.log")
            self._spawn(Proc(name, name, "nats", [natsd.find_binary(), "-c", str(conf)], log))
        for name in names:
            self.wait_nats(name)
        for name in names:
            self.wait_jetstream(name)

    def start_leaf(self, name: str = "edge") -> None:
        """A leaf-node nats-server on its own node, its uplink to every cluster server."""
        self.add_node(name, 41)
        remotes = ", ".join(json.dumps(self.nodes[h].url(LEAF_PORT)) for h in self.nats_names())
        conf = self.nats_conf(name, [], leaf_remote=remotes)
        log = str(self.workdir / name / "nats.log")
        argv = [natsd.find_binary(), "-c", str(conf)]
        self._spawn(Proc(f"{name}-nats", name, "leaf", argv, log))
        self.wait_nats(f"{name}-nats")

    def nats_names(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.kind == "nats"]

    def restart(self, name: str) -> None:
        """Start a stopped process of the run again with its old command line."""
        proc = self.procs[name]
        if alive(proc.pid):
            raise ClusterError(f"{name} still runs (pid {proc.pid})")
        self._spawn(proc, self.host_env if proc.kind in ("host", "controller") else None)
        if proc.kind in ("nats", "leaf"):
            self.wait_nats(name)

    def wait_nats(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs[name]
        node = self.nodes[proc.node]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(proc.pid):
                raise ClusterError(f"nats-server {name} exited; see {proc.log}")
            addr = (node.ip, node.port(CLIENT_PORT))
            with contextlib.suppress(OSError), socket.create_connection(addr, 0.5) as s:
                s.settimeout(0.5)
                if s.recv(5) == b"INFO ":
                    return
            time.sleep(0.05)
        raise ClusterError(f"nats-server {name} did not answer within {timeout:g}s")

    def wait_jetstream(self, name: str, timeout: float = 30.0) -> None:
        """Until the server answers a JetStream account-info request: the cluster has
        elected its meta leader, so a host's first bucket create won't time out."""
        node = self.nodes[self.procs[name].node]
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((node.ip, node.port(CLIENT_PORT)), 1.0) as s:
                    s.settimeout(1.0)
                    s.recv(4096)  # INFO
                    s.sendall(
                        b'CONNECT {"verbose":false}\r\nSUB _INBOX.ready 1\r\n'
                        b"PUB $JS.API.INFO _INBOX.ready 0\r\n\r\n"
                    )
                    got = b""
                    while b"account_info_response" not in got and len(got) < 65536:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                    if b"account_info_response" in got and b'"error"' not in got:
                        return
                    last = got.decode(errors="replace")[-200:]
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ClusterError(f"JetStream on {name} not ready within {timeout:g}s: {last}")

    def check(self) -> None:
        """Raise, with the end of its log, when a process of the run has died."""
        for p in self.procs.values():
            if not alive(p.pid):
                tail = Path(p.log).read_text(errors="replace").strip().splitlines()[-3:]
                raise ClusterError(f"{p.name} (pid {p.pid}) is not running: " + " | ".join(tail))

    def url_of(self, name: str) -> str:
        """The client URL of a NATS process (server or leaf) of the run."""
        proc = self.procs[name]
        return self.nodes[proc.node].url(CLIENT_PORT)

    @property
    def urls(self) -> list[str]:
        return [self.url_of(n) for n in self.nats_names()]

    def start_host(
        self,
        name: str,
        index: int,
        nats: str,
        labels: dict[str, str],
        extra: list[str] | None = None,
        node: str | None = None,
    ) -> Proc:
        self.add_node(node or name, index)
        data = self.workdir / name / "data"
        args = [sys.executable, "-m", "lattice", "up", "--nats-url", self.url_of(nats)]
        args += ["--lattice", self.lattice, "--data-dir", str(data), "--log-format", "json"]
        args += ["--no-embedded-nats", "--no-controller"]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        args += extra or []
        log = str(self.workdir / name / "host.log")
        proc = Proc(name, node or name, "host", args, log, labels=dict(labels))
        return self._spawn(proc, self.host_env)

    def start_controller(self, name: str, nats: str, extra: list[str] | None = None) -> Proc:
        self.add_node("ctl", 31)
        args = [sys.executable, "-m", "lattice", "controller", "--nats-url", self.url_of(nats)]
        args += ["--lattice", self.lattice, "--log-format", "json", *(extra or [])]
        (self.workdir / name).mkdir(parents=True, exist_ok=True)
        log = str(self.workdir / name / "controller.log")
        return self._spawn(Proc(name, "ctl", "controller", args, log), self.host_env)

    # -- faults ------------------------------------------------------------------------

    def need_netns(self, what: str) -> None:
        if not self.netns:
            raise ClusterError(f"{what} needs network namespaces: {self.why_loopback}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        p = self._popen.get(name)
        if p is not None and sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)

    def cut(self, node: str) -> None:
        """Take a node off the network (its veth down): its TCP connections stall."""
        self.need_netns("cutting a node off")
        sh("ip", "link", "set", str(self.nodes[node].veth), "down")

    def restore(self, node: str) -> None:
        self.need_netns("restoring a node")
        sh("ip", "link", "set", str(self.nodes[node].veth), "up")

    def blackhole(self, a: str, b: str, on: bool = True) -> None:
        """Drop what node a sends to node b and b to a; everyone else still reaches both."""
        self.need_netns("a partition")
        verb = "add" if on else "del"
        for x, y in ((a, b), (b, a)):
            nx, ny = self.nodes[x], self.nodes[y]
            sh("ip", "-n", str(nx.ns), "route", verb, "blackhole", f"{ny.ip}/32", check=on)

    # -- state -------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.workdir / "cluster.json"

    def save(self) -> None:
        data = {
            "workdir": str(self.workdir),
            "prefix": self.prefix,
            "netns": self.netns,
            "why_loopback": self.why_loopback,
            "subnet": self.subnet,
            "lattice": self.lattice,
            "owner": self.owner,
            "nodes": {k: asdict(v) for k, v in self.nodes.items()},
            "procs": {k: asdict(v) for k, v in self.procs.items()},
            "host_env": self.host_env,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)
        pointer = RUNS / self.prefix / "cluster.json"
        if pointer != self.state_file:  # a test's run lives in its tmp dir: `status` and
            pointer.parent.mkdir(parents=True, exist_ok=True)  # `down` still find it here
            pointer.write_text(self.state_file.read_text())

    @classmethod
    def load(cls, state_file: Path) -> Cluster:
        d = json.loads(state_file.read_text())
        c = cls(
            workdir=Path(d["workdir"]),
            prefix=d["prefix"],
            netns=d["netns"],
            why_loopback=d["why_loopback"],
            subnet=d["subnet"],
            lattice=d["lattice"],
            owner=d["owner"],
        )
        c.nodes = {k: Node(**v) for k, v in d["nodes"].items()}
        c.procs = {k: Proc(**v) for k, v in d["procs"].items()}
        c.host_env = d.get("host_env", {})
        return c

    # -- teardown ----------------------------------------------------------------------

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process (hosts and controllers first, NATS last) and remove the
        network. SIGTERM, then SIGKILL after `grace`; safe to call twice."""
        order = {"host": 0, "controller": 1, "leaf": 2, "nats": 3}
        groups: dict[int, list[Proc]] = {}
        for p in self.procs.values():
            groups.setdefault(order.get(p.kind, 0), []).append(p)
        for _, procs in sorted(groups.items()):
            for p in procs:
                if alive(p.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for p in procs:
                while alive(p.pid) and time.monotonic() < deadline:
                    self._reap(p.name)
                    time.sleep(0.05)
                if alive(p.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                self._reap(p.name, 5)
        self.remove_network()
        self.stopped = True
        if self.workdir != RUNS / self.prefix:
            shutil.rmtree(RUNS / self.prefix, ignore_errors=True)

    def _at_exit(self) -> None:
        """Whatever happens to the owner, its namespaces and processes go with it."""
        if not self.stopped and self.owner == os.getpid():
            with contextlib.suppress(Exception):
                self.stop(grace=1.0)

    def _reap(self, name: str, timeout: float = 0) -> None:
        p = self._popen.get(name)
        if p is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout) if timeout else p.poll()

    def remove_network(self) -> None:
        remove_prefix(self.prefix)


def remove_prefix(prefix: str) -> list[str]:
    """Delete every namespace and link whose name starts with `prefix-`; what went."""
    gone = []
    if shutil.which("ip") is None:
        return gone
    for ns in sh("ip", "netns", "list", check=False).stdout.split("\n"):
        name = ns.split(" ")[0].strip()
        if name.startswith(f"{prefix}-"):
            # anything still running in it dies with it
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", name, check=False)
            gone.append(f"netns {name}")
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(": ")
        if len(parts) > 1:
            name = parts[1].split("@")[0]
            if name.startswith(f"{prefix}-"):
                sh("ip", "link", "del", name, check=False)
                gone.append(f"link {name}")
    return gone


def leftovers() -> set[str]:
    """Prefixes of namespaces or links on this machine that belong to a cluster run."""
    found: set[str] = set()
    if shutil.which("ip") is None:
        return found
    names = [ln.split(" ")[0] for ln in sh("ip", "netns", "list", check=False).stdout.split("\n")]
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(": ")
        if len(parts) > 1:
            names.append(parts[1].split("@")[0])
    for n in names:
        m = PREFIX_RE.match(n)
        if m:
            found.add(m.group(1))
    return found


def runs() -> list[Cluster]:
    found = []
    for f in sorted(RUNS.glob("lc*/cluster.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.append(Cluster.load(f))
    return found


def standard(
    hosts: int = 4,
    edge: bool = False,
    controllers: int = 2,
    lattice: str = "default",
    workdir: Path | None = None,
    host_args: list[str] | None = None,
    controller_args: list[str] | None = None,
    loopback: bool = False,
    host_env: dict[str, str] | None = None,
) -> Cluster:
    """The layout `up` starts: n1..n3; `hosts` hosts h1, h2, … in zones a, b, a, b …,
    zone a's on n1 and zone b's on n2; `controllers` controllers on n3 (so a cut between
    n2 and n3 partitions the controllers from zone b); maybe an edge host behind a leaf."""
    c = Cluster.create(workdir, lattice, loopback)
    c.host_env = dict(host_env or {})
    try:
        c.start_nats()
        arch = os.uname().machine
        for i in range(hosts):
            zone = "ab"[i % 2]
            labels = {"zone": zone, "arch": arch, "node": f"h{i + 1}"}
            nats = {"a": "n1", "b": "n2"}[zone]
            c.start_host(f"h{i + 1}", 21 + i, nats, labels, host_args)
        for i in range(controllers):
            c.start_controller(f"ctl{i + 1}", "n3", controller_args)
        if edge:
            c.start_leaf("edge")
            labels = {"zone": "edge", "arch": arch, "node": "edge"}
            c.start_host("edge-host", 41, "edge-nats", labels, host_args, node="edge")
    except BaseException:
        c.stop(grace=2)
        raise
    return c


# -- the command line --------------------------------------------------------------------


def _cmd_up(a: argparse.Namespace) -> int:
    for stale in runs():
        if not any(alive(p.pid) for p in stale.procs.values()):
            stale.remove_network()
    c = standard(hosts=a.hosts, edge=a.edge, lattice=a.lattice)
    c.owner = 0  # owned by nobody: `down` stops it
    c.save()
    if not c.netns:
        print(f"no network namespaces ({c.why_loopback}): processes on 127.0.0.1")
    _print(c)
    print(f"\nstop it with: python -m tests.cluster down   (state: {c.state_file})")
    return 0


def _print(c: Cluster) -> None:
    where = f"netns, bridge {c.prefix}-br {c.gateway}/24" if c.netns else "loopback"
    print(f"run {c.prefix} ({where}) lattice {c.lattice}")
    for p in c.procs.values():
        node = c.nodes[p.node]
        state = "up" if alive(p.pid) else "down"
        addr = node.url() if p.kind in ("nats", "leaf") else node.ip
        labels = " ".join(f"{k}={v}" for k, v in p.labels.items())
        print(f"  {p.name:10} {p.kind:10} {state:4} pid {p.pid:<7} {addr:24} {labels}")
    print(f"  NATS: {','.join(c.urls)}")


def _cmd_status(a: argparse.Namespace) -> int:
    found = runs()
    for c in found:
        _print(c)
    orphans = leftovers() - {c.prefix for c in found}
    if orphans:
        print(f"leftover namespaces/links without a run: {', '.join(sorted(orphans))}")
    if not found and not orphans:
        print("no cluster runs")
    return 0


def _cmd_down(a: argparse.Namespace) -> int:
    for c in runs():
        if c.owner and alive(c.owner) and c.owner != os.getpid() and not a.all:
            print(f"run {c.prefix} belongs to pid {c.owner} (a test?); --all stops it too")
            continue
        c.stop()
        shutil.rmtree(c.workdir, ignore_errors=True)
        print(f"run {c.prefix} stopped")
    for prefix in leftovers():
        if not (RUNS / prefix).exists():
            for what in remove_prefix(prefix):
                print(f"removed leftover {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a 3-node NATS cluster, hosts and controllers")
    up.add_argument("--hosts", type=int, default=3, help="how many hosts (default 3)")
    up.add_argument("--edge", action="store_true", help="add an edge host behind a leaf node")
    up.add_argument("--lattice", default="default")
    sub.add_parser("status", help="what runs, where")
    down = sub.add_parser("down", help="stop every run and remove leftovers")
    down.add_argument("--all", action="store_true", help="also runs a live test owns")
    a = ap.parse_args(argv)
    try:
        return {"up": _cmd_up, "status": _cmd_status, "down": _cmd_down}[a.cmd](a)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
