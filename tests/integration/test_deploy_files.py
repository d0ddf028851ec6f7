"""The deployment files (deploy/; docs/deploy.md "Checking the files"). They
cannot run here (no cluster, no container engine, no systemd as PID 1), so
they are checked with what Debian and npm offer, offline:

  - every deploy/k8s/*.yaml parses (python3-yaml) and holds the essentials:
    several replicas, readiness on /readyz and liveness on /healthz of the
    admin port the config really opens, non-root, read-only root, no
    privilege escalation, resources, the state volume, labels that match,
    a grace period longer than the drain; Redis and a PodDisruptionBudget;
  - no private key anywhere under deploy/ (the Secret is a template);
  - the ConfigMap's ztproxy.json passes `ztproxy --check` written out with
    test certificates and keys, and its rules.json passes `ztctl policy lint`;
  - the same manifests against the Kubernetes API schemas and the
    Dockerfile's syntax (deploy/validate: kubernetes-models, dockerfile-utils
    from npm), including a broken copy that must fail;
  - the Dockerfile's essentials (Debian slim, non-root, EXPOSE, HEALTHCHECK);
  - the systemd units: hardening options parsed, and `systemd-analyze
    verify` with the binaries pointed at this build;
  - deploy/haproxy/haproxy.cfg: `haproxy -c` as shipped, and its essentials.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ztlib  # noqa: E402

try:
    import yaml
except ImportError:  # pragma: no cover - tools/setup.sh installs python3-yaml
    yaml = None

SRC = ztlib.SOURCE_DIR
DEPLOY = os.path.join(SRC, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
ZTCTL = ztlib.ZTCTL_BIN
PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text))
    if not m:
        raise AssertionError("not a duration: %r" % text)
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def load_k8s():
    """{(kind, name): (file, doc)} of every document in deploy/k8s."""
    out = {}
    for name in sorted(os.listdir(K8S)):
        if not name.endswith(".yaml") or name == "kustomization.yaml":
            continue
        with open(os.path.join(K8S, name), encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                key = (doc["kind"], doc["metadata"]["name"])
                if key in out:
                    raise AssertionError("%s/%s defined twice" % key)
                out[key] = (name, doc)
    return out


def unit_options(path):
    """{key: [values]} of a systemd unit file (every section)."""
    opts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            k, sep, v = line.partition("=")
            if not sep:
                raise AssertionError("%s: not key=value: %r" % (path, line))
            opts.setdefault(k.strip(), []).append(v.strip())
    return opts


class DeployFilesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if yaml is None:
            raise AssertionError("python3-yaml is missing (tools/setup.sh installs it)")
        cls.k8s = load_k8s()
        cm = cls.k8s[("ConfigMap", "ztproxy-config")][1]
        cls.config_text = cm["data"]["ztproxy.json"]
        cls.config = json.loads(cls.config_text)
        cls.rules_text = cm["data"]["rules.json"]
        cls.tmp = ztlib.make_tmpdir("zt-deploy-")

    @classmethod
    def tearDownClass(cls):
        ztlib.remove_tmpdir(cls.tmp)

    def doc(self, kind, name):
        self.assertIn((kind, name), self.k8s, "deploy/k8s has no %s %s" % (kind, name))
        return self.k8s[(kind, name)][1]

    # ------------------------------------------------------------- kubernetes
    def test_k8s_inventory_and_namespace(self):
        kinds = {k for k, _n in self.k8s}
        for kind in ("Namespace", "ConfigMap", "Secret", "Deployment", "Service",
                     "PodDisruptionBudget"):
            self.assertIn(kind, kinds)
        self.doc("Deployment", "redis")
        self.doc("Service", "redis")
        for (kind, name), (_f, d) in self.k8s.items():
            if kind != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), "ztproxy", "%s/%s" % (kind, name))
        with open(os.path.join(K8S, "kustomization.yaml"), encoding="utf-8") as f:
            kust = yaml.safe_load(f)
        listed = set(kust["resources"])
        present = {n for n in os.listdir(K8S) if n.endswith(".yaml") and n != "kustomization.yaml"}
        self.assertEqual(listed, present, "kustomization.yaml lists every manifest")

    def test_k8s_deployment_essentials(self):
        dep = self.doc("Deployment", "ztproxy")
        spec = dep["spec"]
        self.assertGreater(spec["replicas"], 1)
        self.assertEqual(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(k), v)
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        self.assertNotEqual(pod["securityContext"].get("runAsUser", 0), 0)
        self.assertIs(pod.get("automountServiceAccountToken"), False)
        (c,) = [c for c in pod["containers"] if c["name"] == "ztproxy"]
        sc = c["securityContext"]
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["runAsNonRoot"], True)
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        for ic in pod.get("initContainers", []):
            self.assertIs(ic["securityContext"]["allowPrivilegeEscalation"], False, ic["name"])
            self.assertIs(ic["securityContext"]["readOnlyRootFilesystem"], True, ic["name"])
        for part in ("requests", "limits"):
            self.assertIn("cpu", c["resources"][part])
            self.assertIn("memory", c["resources"][part])

        # Probes: /readyz and /healthz on the port the config's admin listener opens.
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        rp, lp = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
        self.assertEqual(rp["path"], "/readyz")
        self.assertEqual(lp["path"], "/healthz")
        self.assertEqual(rp["scheme"], "HTTPS")
        admin_port = int(self.config["admin"]["listen"].rsplit(":", 1)[1])
        self.assertEqual(ports[rp["port"]], admin_port)
        self.assertEqual(ports[lp["port"]], admin_port)
        data_port = int(self.config["listen"][0]["address"].rsplit(":", 1)[1])
        self.assertEqual(ports["https"], data_port)

        # The drain fits: preStop + shutdown_grace < terminationGracePeriodSeconds.
        grace = duration_s(self.config["timeouts"]["shutdown_grace"])
        pre = c["lifecycle"]["preStop"]["exec"]["command"][-1]
        pre_s = int(re.search(r"sleep (\d+)", pre).group(1))
        self.assertLess(grace + pre_s, pod["terminationGracePeriodSeconds"])

        # Every path the config reads is mounted; the state dir is a writable volume.
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        state = self.config["state_dir"]
        self.assertIn(state, mounts)
        self.assertFalse(mounts[state].get("readOnly", False))
        vols = {v["name"]: v for v in pod["volumes"]}
        self.assertIn(mounts[state]["name"], vols)
        paths = re.findall(r'"(/[^"]+)"', self.config_text)
        for p in paths:
            if p.startswith("/var/lib/ztproxy"):
                continue
            self.assertTrue(any(p.startswith(m.rstrip("/") + "/") for m in mounts),
                            "%s is not under a volume mount" % p)

    def test_k8s_services_pdb_redis(self):
        dep = self.doc("Deployment", "ztproxy")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for name in ("ztproxy", "ztproxy-admin"):
            svc = self.doc("Service", name)
            for k, v in svc["spec"]["selector"].items():
                self.assertEqual(labels.get(k), v, name)
            for p in svc["spec"]["ports"]:
                self.assertIn(p["targetPort"], ports, name)
        self.assertEqual(self.doc("Service", "ztproxy")["spec"]["ports"][0]["port"], 443)
        self.assertEqual(self.doc("Service", "ztproxy-admin")["spec"]["type"], "ClusterIP")
        pdb = self.doc("PodDisruptionBudget", "ztproxy")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"],
                         dep["spec"]["selector"]["matchLabels"])
        self.assertLess(pdb["spec"].get("maxUnavailable", 0), dep["spec"]["replicas"])
        redis = self.doc("Deployment", "redis")["spec"]["template"]
        rsvc = self.doc("Service", "redis")
        for k, v in rsvc["spec"]["selector"].items():
            self.assertEqual(redis["metadata"]["labels"].get(k), v)
        self.assertIs(redis["spec"]["securityContext"]["runAsNonRoot"], True)
        self.assertEqual(rsvc["spec"]["ports"][0]["port"], 6379)
        # Redis keeps its state across restarts and requires a password that
        # ztproxy reads from the same Secret.
        rc = redis["spec"]["containers"][0]
        self.assertIn("--requirepass", rc["args"])
        self.assertEqual(rc["args"][rc["args"].index("--appendonly") + 1], "yes")
        vol = {v["name"]: v for v in redis["spec"]["volumes"]}["data"]
        self.assertEqual(vol["persistentVolumeClaim"]["claimName"], "redis-data")
        self.doc("PersistentVolumeClaim", "redis-data")
        cfg = json.loads(self.doc("ConfigMap", "ztproxy-config")["data"]["ztproxy.json"])
        self.assertTrue(cfg["redis"]["password_file"].startswith("/run/ztproxy/keys/"))

    def test_no_private_key_in_deploy(self):
        found = []
        # What is (or would be) committed: files git tracks or has not been
        # told to ignore. Generated demo state (deploy/demo/run, ignored)
        # holds keys on purpose and is never committed.
        try:
            out = subprocess.run(["git", "-C", DEPLOY, "ls-files", "--cached", "--others",
                                  "--exclude-standard", "-z", "."], check=True,
                                 capture_output=True).stdout.decode()
            paths = [os.path.join(DEPLOY, f) for f in out.split("\0") if f]
        except (OSError, subprocess.CalledProcessError):
            paths = [os.path.join(d, n) for d, _dirs, files in os.walk(DEPLOY)
                     if "node_modules" not in d.split(os.sep) and
                     os.sep + "run" not in d[len(DEPLOY):] for n in files]
        for p in paths:
            if "node_modules" in p.split(os.sep):
                continue
            try:
                text = open(p, encoding="utf-8", errors="replace").read()
            except OSError:
                continue
            if PEM_PRIVATE.search(text):
                found.append(p)
        self.assertEqual(found, [], "private keys committed under deploy/")
        # The Secrets' values, decoded too, hold placeholders only.
        for (kind, name), (_f, d) in self.k8s.items():
            if kind != "Secret":
                continue
            values = dict(d.get("stringData") or {})
            for k, v in (d.get("data") or {}).items():
                values[k] = base64.b64decode(v).decode(errors="replace")
            self.assertTrue(values, name)
            for k, v in values.items():
                self.assertFalse(PEM_PRIVATE.search(v), "%s/%s" % (name, k))
                self.assertTrue(v.startswith("REPLACE"), "%s/%s is not a placeholder" % (name, k))
        # Every key file the config reads from the keys directory is in the Secret.
        keys = self.doc("Secret", "ztproxy-keys")["stringData"]
        for p in re.findall(r'"/run/ztproxy/keys/([^"/]+)"', self.config_text):
            if p == self.config["identity"]["assertion"]["keys_dir"].rsplit("/", 1)[1]:
                # The keys directory: filled from the Secret's assertion-*.pem.
                self.assertTrue(any(k.startswith("assertion-") for k in keys))
                continue
            self.assertIn(p, keys)

    def test_configmap_config_passes_check(self):
        """ztproxy --check on the ConfigMap's config with test files laid out
        at the same paths under a temporary root."""
        root = os.path.join(self.tmp, "root")
        pki = ztlib.make_pki(os.path.join(self.tmp, "pki"))
        tls = os.path.join(root, "etc", "ztproxy-tls")
        keys = os.path.join(root, "run", "ztproxy", "keys")
        etc = os.path.join(root, "etc", "ztproxy")
        for d in (tls, etc, os.path.join(keys, "assertion"), os.path.join(root, "var", "lib")):
            os.makedirs(d, exist_ok=True)
        os.chmod(keys, 0o700)
        shutil.copy(pki.server_crt, os.path.join(tls, "server.crt"))
        shutil.copy(pki.ca, os.path.join(tls, "device-ca.crt"))
        shutil.copy(pki.crl, os.path.join(tls, "crl.pem"))
        shutil.copy(pki.server_key, os.path.join(keys, "server.key"))
        ring = [{"id": "k1", "key": base64.b64encode(os.urandom(32)).decode(),
                 "created": 1764300000}]
        files = {"session.keys": json.dumps(ring), "oidc-client-secret": "test-secret\n",
                 "admin.tokens": "ops:%s\n" % base64.b16encode(os.urandom(16)).decode(),
                 "redis.pw": base64.b64encode(os.urandom(24)).decode() + "\n"}
        for name, text in files.items():
            with open(os.path.join(keys, name), "w") as f:
                f.write(text)
        r = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-out",
                            os.path.join(keys, "assertion", "assertion-1.pem")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout)
        for d, _dirs, names in os.walk(keys):
            for n in names:
                os.chmod(os.path.join(d, n), 0o600)
        with open(os.path.join(etc, "rules.json"), "w") as f:
            f.write(self.rules_text)
        # The init container copies the ConfigMap's rules into the writable
        # state volume (the admin API rewrites the rules file there).
        init = self.doc("Deployment", "ztproxy")["spec"]["template"]["spec"]["initContainers"]
        script = "\n".join(init[0]["args"])
        self.assertIn("/etc/ztproxy/rules.json /var/lib/ztproxy/rules.json", script)
        self.assertEqual(self.config["policy"]["rules"], "/var/lib/ztproxy/rules.json")
        os.makedirs(os.path.join(root, "var", "lib", "ztproxy"), exist_ok=True)
        shutil.copy(os.path.join(etc, "rules.json"),
                    os.path.join(root, "var", "lib", "ztproxy", "rules.json"))

        text = self.config_text
        for prefix in ("/etc/", "/run/", "/var/lib/"):
            text = text.replace('"%s' % prefix, '"%s%s' % (root, prefix))
        # No cluster DNS here: the upstream's service name becomes loopback.
        text, n = re.subn(r'"http://[a-z0-9.-]+\.svc\.cluster\.local:', '"http://127.0.0.1:', text)
        self.assertGreater(n, 0)
        cfg = json.loads(text)

        def check(c):
            path = ztlib.write_config(self.tmp, c, name="configmap-ztproxy.json")
            return subprocess.run([ztlib.ZTPROXY_BIN, "-c", path, "--check"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        r = check(cfg)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual(out.strip().splitlines()[-1], "ok", out)
        sys.stderr.write("[deploy] ConfigMap config: ztproxy --check ok\n")

        # Its listener takes PROXY v2 from named load balancers, nothing wider.
        lst = self.config["listen"][0]
        self.assertIs(lst["proxy_protocol"], True)
        self.assertTrue(lst["trusted_proxies"])
        for net in lst["trusted_proxies"]:
            self.assertFalse(net.endswith("/0"), net)

        # The rules pass the linter.
        if os.path.exists(ZTCTL):
            r = subprocess.run([ZTCTL, "policy", "lint", os.path.join(etc, "rules.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        else:
            self.fail("ztctl is not built (%s)" % ZTCTL)

    def test_schema_validation_offline(self):
        node = shutil.which("node")
        script = os.path.join(DEPLOY, "validate", "validate.mjs")
        mods = os.path.join(DEPLOY, "validate", "node_modules")
        self.assertTrue(node, "node is missing (tools/setup.sh installs it)")
        self.assertTrue(os.path.isdir(mods),
                        "deploy/validate/node_modules is missing: run tools/setup.sh")
        r = subprocess.run([node, script, SRC], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("ok: deploy/k8s/deployment.yaml", out)
        self.assertIn("ok: deploy/container/Dockerfile", out)
        # A broken copy must fail: the validators do validate.
        broken = os.path.join(self.tmp, "broken")
        shutil.copytree(os.path.join(DEPLOY, "k8s"), os.path.join(broken, "deploy", "k8s"))
        shutil.copytree(os.path.join(DEPLOY, "container"),
                        os.path.join(broken, "deploy", "container"))
        dp = os.path.join(broken, "deploy", "k8s", "deployment.yaml")
        with open(dp, encoding="utf-8") as f:
            text = f.read()
        with open(dp, "w", encoding="utf-8") as f:
            f.write(text.replace("containerPort: 8443", 'containerPort: "https"', 1))
        df = os.path.join(broken, "deploy", "container", "Dockerfile")
        with open(df, "a", encoding="utf-8") as f:
            f.write("EXPOSE notaport\n")
        r = subprocess.run([node, script, broken], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 1, out)
        self.assertIn("deploy/k8s/deployment.yaml: doc 1 (Deployment/ztproxy)", out)
        self.assertIn("containerPort", out)
        self.assertIn("deploy/container/Dockerfile:", out)

    # ------------------------------------------------------------- container
    def test_dockerfile_essentials(self):
        with open(os.path.join(DEPLOY, "container", "Dockerfile"), encoding="utf-8") as f:
            text = f.read()
        lines = [l for l in re.sub(r"\\\n", " ", text).splitlines()
                 if l.strip() and not l.lstrip().startswith("#")]
        froms = [l.split()[1] for l in lines if l.startswith("FROM ")]
        self.assertGreaterEqual(len(froms), 2, "multi-stage")
        self.assertTrue(all(f == "debian:12-slim" for f in froms), froms)
        final = lines[max(i for i, l in enumerate(lines) if l.startswith("FROM "))]
        runtime = lines[lines.index(final):]
        users = [l.split()[1] for l in runtime if l.startswith("USER ")]
        self.assertTrue(users, "the runtime stage sets USER")
        self.assertNotIn(users[-1].split(":")[0], ("0", "root"))
        expose = " ".join(l for l in runtime if l.startswith("EXPOSE "))
        self.assertIn("8443", expose)
        self.assertIn("9443", expose)
        self.assertTrue(any(l.startswith("HEALTHCHECK ") for l in runtime))
        self.assertTrue(any(l.startswith("ENTRYPOINT ") and "ztproxy" in l for l in runtime))
        installs = " ".join(l for l in runtime if l.startswith("RUN "))
        for tool in ("build-essential", "gcc", "cmake", "-dev "):
            self.assertNotIn(tool, installs, "no toolchain in the runtime image")
        for l in lines:
            if l.startswith(("COPY ", "ADD ")):
                self.assertNotRegex(l, r"\.(key|pem)\b", l)
        ign = os.path.join(DEPLOY, "container", "Dockerfile.dockerignore")
        self.assertTrue(os.path.exists(ign))

    # ------------------------------------------------------------- systemd
    def test_systemd_units(self):
        sd = os.path.join(DEPLOY, "systemd")
        zp = unit_options(os.path.join(sd, "ztproxy.service"))
        want = {"User": "ztproxy", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes",
                "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
                "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
                "SystemCallFilter": "@system-service"}
        for k, v in want.items():
            self.assertIn(v, zp.get(k, []), "ztproxy.service %s=%s" % (k, v))
        self.assertIn("/var/lib/ztproxy", " ".join(zp["ReadWritePaths"]))
        self.assertTrue(any("kill -HUP $MAINPID" in v for v in zp["ExecReload"]))
        self.assertTrue(zp["RestrictAddressFamilies"])
        # The stop timeout outlasts the drain (timeouts.shutdown_grace, default 30s).
        self.assertGreater(duration_s(zp["TimeoutStopSec"][0]), 30)
        ag = unit_options(os.path.join(sd, "ztagent.service"))
        for k in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
            self.assertTrue(ag.get(k), "ztagent.service %s" % k)

        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            sys.stderr.write("[deploy] systemd-analyze not installed: parsed only\n")
            return
        d = os.path.join(self.tmp, "units")
        os.makedirs(d, exist_ok=True)
        for name, binary in (("ztproxy.service", ztlib.ZTPROXY_BIN),
                             ("ztagent.service", ztlib.ZTAGENT_BIN)):
            with open(os.path.join(sd, name), encoding="utf-8") as f:
                text = f.read()
            text = text.replace("/usr/local/bin/%s" % name.split(".")[0], binary)
            with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                f.write(text)
        r = subprocess.run([analyze, "verify", os.path.join(d, "ztproxy.service"),
                            os.path.join(d, "ztagent.service")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)

    # ------------------------------------------------------------- haproxy
    def test_haproxy_config(self):
        cfg = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.assertTrue(os.path.exists(haproxy), "haproxy is missing (tools/setup.sh)")
        r = subprocess.run([haproxy, "-c", "-f", cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        text = open(cfg, encoding="utf-8").read()
        self.assertRegex(text, r"(?m)^\s*mode tcp$")
        self.assertRegex(text, r"(?m)^\s*option httpchk GET /readyz$")
        self.assertRegex(text, r"(?m)^\s*default-server send-proxy-v2 check port 9443 check-ssl")
        self.assertRegex(text, r"(?m)^\s*option redispatch")
        self.assertGreaterEqual(len(re.findall(r"(?m)^\s*server ", text)), 2)
        admin_port = int(self.config["admin"]["listen"].rsplit(":", 1)[1])
        self.assertIn("check port %d " % admin_port, text)


if __name__ == "__main__":
    ztlib.main()
