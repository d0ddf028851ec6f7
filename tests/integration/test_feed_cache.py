#!/usr/bin/env python3
"""The URL inventory feed cached across a restart (issue 4,
docs/device-trust.md "Feed cache"): the last good feed fetched from a URL
is kept in state_dir with its ETag and fetch time; a proxy started while
the feed server is down loads it (the devices are still known), its age
counts from the original fetch (so max_stale still fails closed), and the
first poll revalidates it with If-None-Match.

Real processes: ztproxy (with an admin listener for /readyz), upstream.py,
and the feed served by ztlib.FeedServer (a thread of this process).
"""

import json
import os
import ssl
import time
import http.client

import ztlib
import test_device_trust as tdt
from ztlib import inventory_record, wait_until


class FeedCacheTest(tdt.DeviceTrustBase):
    POSTED = ("good",)
    max_stale = "1h"

    @classmethod
    def inventory_config(cls):
        return {"url": cls.feed.url, "poll": "1s", "timeout": "2s", "max_stale": cls.max_stale}

    @classmethod
    def prepare_feed(cls):
        body = "".join(json.dumps(inventory_record(d)) + "\n" for d in ("good", "agent-x"))
        cls.feed = ztlib.FeedServer(body, content_type="application/x-ndjson").start()

    @classmethod
    def config_extra(cls):
        cfg = super().config_extra()
        cls.admin_port = ztlib.free_port()
        tokens = os.path.join(cls.tmp, "admin.tokens")
        with open(tokens, "w") as f:
            f.write("ops:feed-cache-test-token-0123456789\n")
        os.chmod(tokens, 0o600)
        cfg["admin"] = {"listen": "127.0.0.1:%d" % cls.admin_port, "token_file": tokens}
        return cfg

    # ---------------------------------------------------------------- helpers
    def readyz(self):
        wait_until(lambda: ztlib.port_accepts(self.admin_port), 10, what="admin listener")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki.ca)
        ctx.check_hostname = False
        c = http.client.HTTPSConnection("127.0.0.1", self.admin_port, timeout=30, context=ctx)
        try:
            c.request("GET", "/readyz")
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def last_confirmed(self):
        ok = [r["time"] for r in self.feed.requests if r["status"] in (200, 304)]
        return max(ok) if ok else None

    def restart(self, max_stale):
        rc = type(self).proxy.stop()
        self.assertIn(rc, (0, None), "ztproxy exit status on SIGTERM")
        type(self).max_stale = max_stale
        type(self).start_proxy()

    def meta(self):
        with open(os.path.join(self.state_dir, "inventory-feed.meta")) as f:
            return json.load(f)

    # ------------------------------------------------------------------ tests
    def test_1_cache_across_restart(self):
        # Fetched (200) and revalidated (304): the cache is in state_dir.
        wait_until(lambda: self.feed.count(200) >= 1, 10, what="a 200 from the feed")
        wait_until(lambda: self.feed.count(304) >= 1, 15, interval=0.2, what="a 304")
        self.assert_allowed("good", tier="high", what="with the live feed")
        for name in ("inventory-feed.cache", "inventory-feed.meta"):
            path = os.path.join(self.state_dir, name)
            self.assertTrue(os.path.exists(path), "no %s" % path)
            self.assertEqual(os.stat(path).st_mode & 0o077, 0, "%s mode" % name)
        with open(os.path.join(self.state_dir, "inventory-feed.cache"), "rb") as f:
            self.assertEqual(f.read(), self.feed.body, "the cache holds the body as fetched")
        m = self.meta()
        self.assertEqual(m["url"], self.feed.url, m)
        self.assertEqual(m["etag"], self.feed.etag, m)
        self.assertEqual(m["length"], len(self.feed.body), m)
        # The 304s renew the cache's fetch time too (the loader writes it).
        wait_until(lambda: abs(self.meta()["fetched_at"] - self.last_confirmed()) <= 1.5, 10,
                   interval=0.2, what="the meta's fetched_at to follow the last 304")

        # The feed goes down, then the proxy restarts: the devices are known.
        self.feed.stop()
        last = self.last_confirmed()
        time.sleep(max(0.0, last + 3.2 - time.time()))
        self.restart("1h")
        st, body = self.readyz()
        dt = body["device_trust"]
        self.assertEqual(dt["records"], 2, body)
        self.assertFalse(dt["stale"], body)
        # The age counts from the original fetch, not from the restart.
        self.assertGreaterEqual(dt["feed_age"], 3, body)
        self.assertGreaterEqual(dt["feed_age"], int(time.time() - last) - 1, body)
        self.assertEqual(st, 200, body)
        self.assert_allowed("good", tier="high", what="restarted with the feed down, from the cache")
        self.assertIn("feed cache", ztlib._tail(type(self).proxy.stderr_path, 200))

        # max_stale still fails closed: the cached feed is older than 2s.
        self.restart("2s")
        st, body = self.readyz()
        self.assertEqual(body["device_trust"]["records"], 2, body)
        self.assertTrue(body["device_trust"]["stale"], body)
        self.assertEqual(st, 503, body)
        path, r = self.app("good")
        self.assertEqual(r.status, 403, "a stale cached feed must fail closed: %r" % r)
        self.assertIn("stale", json.dumps(r.json()).lower(), r.json())
        self.assertNotIn(path, self.up.targets())

        # The feed comes back: the first poll revalidates the cached body
        # with its ETag (304), which makes it fresh again.
        n = len(self.feed.requests)
        self.feed.start()
        wait_until(lambda: len(self.feed.requests) > n, 15, interval=0.2, what="a poll")
        first = self.feed.requests[n]
        self.assertEqual(first["if_none_match"], self.feed.etag, first)
        self.assertEqual(first["status"], 304, first)
        wait_until(lambda: self.app("good")[1].status == 200, 15, interval=0.3,
                   what="good allowed again after the 304")
        self.assert_allowed("good", tier="high", what="after the revalidation")

    def test_2_damaged_cache_ignored(self):
        # A body that does not match its meta (length / SHA-256) is never
        # used: with the feed down the proxy starts without an inventory.
        wait_until(lambda: os.path.exists(os.path.join(self.state_dir, "inventory-feed.meta")),
                   15, interval=0.2, what="the feed cache")
        self.feed.stop()
        try:
            with open(os.path.join(self.state_dir, "inventory-feed.cache"), "ab") as f:
                f.write(b"\n")
            self.restart("1h")
            st, body = self.readyz()
            self.assertEqual(body["device_trust"]["feed_age"], -1, body)
            self.assertEqual(st, 503, body)
            self.assertIn("feed cache not used", ztlib._tail(type(self).proxy.stderr_path, 200))
            path, r = self.app("good")
            self.assertEqual(r.status, 403, r)
        finally:
            self.feed.start()
        # Fetched again (a plain GET: no validators from a refused cache).
        wait_until(lambda: self.app("good")[1].status == 200, 15, interval=0.3,
                   what="good allowed once the feed is back")


if __name__ == "__main__":
    ztlib.main()
