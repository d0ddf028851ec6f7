/*
 * ztproxy security console: a thin client of the admin API
 * (docs/admin-api.md), served by the admin listener from admin.console_dir.
 *
 * Plain browser JavaScript, no framework, no build step, nothing loaded from
 * elsewhere. Every value that comes from the API (paths, user names, reasons
 * chosen by whoever sent a request through the proxy) is put into the page
 * with textContent, never as HTML.
 *
 * Credentials: an admin token typed into the sign-in box is kept in this
 * tab's sessionStorage and sent as "Authorization: Bearer"; without one, an
 * admin client certificate the browser presents also works. Every write sends
 * Content-Type: application/json (the API refuses writes without it: CSRF).
 */
(function () {
    "use strict";

    var API = "/api/v1";
    var TOKEN_KEY = "ztproxy.admin.token";
    var POLL_MS = 2000;

    var state = {
        token: null,
        signedIn: false,
        how: "",
        page: null,
        pollTimer: null,
        pollBusy: false,
        live: null,       // GET /rules answer
        draftErrors: [],  // last validation errors (mapped to the draft)
        draftDoc: null,   // last successfully parsed draft
        dirty: false,     // the draft was edited since the live rules were loaded
        parseTimer: null,
        devices: [],
        detailId: null
    };

    // ------------------------------------------------------------------ DOM
    function $(id) {
        return document.getElementById(id);
    }

    /* el("td", {class: "x"}, "text", childNode, ...): children are text or nodes. */
    function el(tag, attrs) {
        var n = document.createElement(tag);
        var k, i, c;
        if (attrs) {
            for (k in attrs) {
                if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] == null) continue;
                if (k === "class") n.className = attrs[k];
                else if (k === "text") n.textContent = attrs[k];
                else if (k.slice(0, 2) === "on") n.addEventListener(k.slice(2), attrs[k]);
                else n.setAttribute(k, attrs[k]);
            }
        }
        for (i = 2; i < arguments.length; i++) {
            c = arguments[i];
            if (c == null || c === false) continue;
            if (Array.isArray(c)) c.forEach(function (x) { if (x != null) n.appendChild(typeof x === "object" ? x : document.createTextNode(String(x))); });
            else n.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
        }
        return n;
    }

    function clear(n) {
        while (n.firstChild) n.removeChild(n.firstChild);
        return n;
    }

    function badge(text, kind) {
        return el("span", { class: "badge " + (kind || text), text: text === "step_up" ? "step-up" : text });
    }

    function emptyRow(tbody, cols, text) {
        tbody.appendChild(el("tr", { class: "empty" }, el("td", { colspan: String(cols), text: text })));
    }

    var statusTimer = null;
    /* The aria-live status line: kind "ok", "err" or "" (information). */
    function say(text, kind) {
        var s = $("status");
        s.className = "status" + (kind ? " " + kind : "");
        s.textContent = text;
        if (statusTimer) clearTimeout(statusTimer);
        statusTimer = null;
        if (kind === "ok") {
            statusTimer = setTimeout(function () {
                s.className = "status";
            }, 8000);
        }
    }

    function fmtTime(t) {
        if (t == null || t === "") return "";
        if (typeof t === "number") t = new Date(t * 1000).toISOString();
        return String(t).replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, "");
    }

    function fmtAge(s) {
        if (s == null) return "no report";
        if (s < 120) return s + " s";
        if (s < 7200) return Math.round(s / 60) + " min";
        if (s < 172800) return Math.round(s / 3600) + " h";
        return Math.round(s / 86400) + " d";
    }

    function str(v) {
        if (v == null) return "";
        if (typeof v === "object") return JSON.stringify(v);
        return String(v);
    }

    // ------------------------------------------------------------------ API
    /* Resolves to {status, body}; body is the parsed JSON or null. Network
     * errors resolve to status 0. 401 (and a 403 that is not a CSRF refusal)
     * ends the sign-in. */
    function api(method, path, body, opts) {
        var headers = { Accept: "application/json" };
        var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
        if (state.token) headers.Authorization = "Bearer " + state.token;
        if (body !== undefined) {
            headers["Content-Type"] = "application/json";
            init.body = JSON.stringify(body);
        }
        return fetch(API + path, init).then(function (r) {
            return r.text().then(function (t) {
                var j = null;
                try {
                    j = t ? JSON.parse(t) : null;
                } catch (e) {
                    j = null;
                }
                var res = { status: r.status, body: j };
                if (!(opts && opts.probe) && state.signedIn && (r.status === 401 ||
                        (r.status === 403 && !(j && j.error === "csrf")))) {
                    signedOut("Your credentials were refused (" + r.status + "); sign in again.");
                }
                return res;
            });
        }, function (e) {
            return { status: 0, body: { error: "network", message: "the admin listener did not answer (" + e.message + ")" } };
        });
    }

    function errText(res) {
        var b = res.body;
        if (b && b.message) return b.message + (b.error ? " (" + b.error + ")" : "");
        if (b && b.error) return b.error;
        return "HTTP " + res.status;
    }

    // ------------------------------------------------------------- sign in
    function probe() {
        return api("GET", "/rules", undefined, { probe: true });
    }

    function signedIn(how) {
        state.signedIn = true;
        state.how = how;
        $("who-text").textContent = how;
        $("who").hidden = false;
        $("nav").hidden = false;
        $("page-signin").hidden = true;
        route();
    }

    function signedOut(msg) {
        state.signedIn = false;
        state.token = null;
        try {
            sessionStorage.removeItem(TOKEN_KEY);
        } catch (e) { /* storage disabled */ }
        stopPoll();
        $("who").hidden = true;
        $("nav").hidden = true;
        document.querySelectorAll(".page").forEach(function (p) { p.hidden = true; });
        $("page-signin").hidden = false;
        if (msg) say(msg, "err");
        $("signin-token").focus();
    }

    function start() {
        try {
            state.token = sessionStorage.getItem(TOKEN_KEY);
        } catch (e) {
            state.token = null;
        }
        probe().then(function (res) {
            if (res.status === 200) {
                signedIn(state.token ? "Signed in with an admin token" : "Signed in with a client certificate");
            } else {
                signedOut(state.token ? "The saved token was refused; sign in again." : null);
                if (!state.token) say("Sign in with an admin token.", "");
            }
        });
    }

    $("signin-form").addEventListener("submit", function (ev) {
        ev.preventDefault();
        var tok = $("signin-token").value.trim();
        var errp = $("signin-error");
        errp.hidden = true;
        if (!tok) return;
        state.token = tok;
        probe().then(function (res) {
            if (res.status === 200) {
                try {
                    sessionStorage.setItem(TOKEN_KEY, tok);
                } catch (e) { /* kept in memory only */ }
                $("signin-token").value = "";
                say("Signed in.", "ok");
                signedIn("Signed in with an admin token");
            } else {
                state.token = null;
                errp.textContent = res.status === 403 || res.status === 401 ?
                    "That token was refused." : "Sign-in failed: " + errText(res);
                errp.hidden = false;
                say(errp.textContent, "err");
            }
        });
    });

    $("signout").addEventListener("click", function () {
        signedOut(null);
        say("Signed out.", "");
    });

    // --------------------------------------------------------------- router
    var PAGES = ["decisions", "rules", "devices"];

    function route() {
        if (!state.signedIn) return;
        var name = (location.hash || "").replace(/^#/, "");
        if (PAGES.indexOf(name) < 0) name = "decisions";
        var changed = state.page !== name;
        state.page = name;
        PAGES.forEach(function (p) {
            $("page-" + p).hidden = p !== name;
            var a = $("nav-" + p);
            if (p === name) a.setAttribute("aria-current", "page");
            else a.removeAttribute("aria-current");
        });
        document.title = "ztproxy console: " + name;
        if (changed && $("status").className !== "status err") {
            $("status").className = "status";
            $("status").textContent = "";
        }
        stopPoll();
        if (name === "decisions") {
            loadDecisions();
            startPoll();
        } else if (name === "rules" && changed) {
            if (!state.dirty) loadRules(false);
            loadHistory();
        } else if (name === "devices" && changed) {
            loadDevices();
        }
    }
    window.addEventListener("hashchange", route);

    // ------------------------------------------------------------ decisions
    function decisionQuery() {
        var q = [];
        ["user", "device", "route"].forEach(function (k) {
            var v = $("dec-" + k).value.trim();
            if (v) q.push(k + "=" + encodeURIComponent(v));
        });
        if ($("dec-effect").value) q.push("effect=" + encodeURIComponent($("dec-effect").value));
        q.push("limit=" + encodeURIComponent($("dec-limit").value));
        return "?" + q.join("&");
    }

    function loadDecisions() {
        if (state.pollBusy) return Promise.resolve();
        state.pollBusy = true;
        return api("GET", "/decisions" + decisionQuery()).then(function (res) {
            state.pollBusy = false;
            if (res.status !== 200) {
                $("dec-meta").textContent = "Could not load decisions: " + errText(res);
                return;
            }
            renderDecisions((res.body && res.body.decisions) || []);
        });
    }

    function renderDecisions(list) {
        var tb = clear($("dec-body"));
        $("dec-meta").textContent = list.length + " decision" + (list.length === 1 ? "" : "s") +
            ", newest first; updated " + new Date().toISOString().slice(11, 19) + " UTC";
        if (!list.length) {
            emptyRow(tb, 8, "No decisions match.");
            return;
        }
        list.forEach(function (d) {
            var reasons = (d.reasons || []).map(function (r) { return el("li", { text: r }); });
            (d.monitor || []).forEach(function (m) {
                reasons.push(el("li", { text: "monitor " + (m.rule || "") + ": " + (m.would_decide || m.result || "") }));
            });
            var dev = d.device ? [el("span", { class: "mono-cell", text: d.device }),
                d.tier != null ? el("div", { class: "meta", text: "tier " + d.tier + (d.score != null ? ", score " + d.score : "") }) : null] : "—";
            tb.appendChild(el("tr", { "data-effect": d.effect || "", "data-device": d.device || "", "data-request-id": d.request_id || "" },
                el("td", { class: "mono-cell", text: fmtTime(d.time) }),
                el("td", null, badge(d.effect || "unknown", d.effect || "unknown")),
                el("td", { text: d.route || "—" }),
                el("td", { class: "mono-cell" }, (d.method || "") + " " + (d.path || "")),
                el("td", { text: d.email || d.user || "—" }),
                el("td", null, dev),
                el("td", { class: "mono-cell", text: d.rule || "" }),
                el("td", null, reasons.length ? el("ul", null, reasons) : "")));
        });
    }

    function startPoll() {
        stopPoll();
        if (!$("dec-live").checked) return;
        state.pollTimer = setInterval(function () {
            if (document.visibilityState === "visible" && state.page === "decisions") loadDecisions();
        }, POLL_MS);
    }

    function stopPoll() {
        if (state.pollTimer) clearInterval(state.pollTimer);
        state.pollTimer = null;
    }

    $("dec-filters").addEventListener("submit", function (ev) {
        ev.preventDefault();
        loadDecisions();
    });
    $("dec-clear").addEventListener("click", function () {
        ["user", "device", "route", "effect"].forEach(function (k) { $("dec-" + k).value = ""; });
        loadDecisions();
    });
    $("dec-live").addEventListener("change", function () {
        if ($("dec-live").checked) startPoll();
        else stopPoll();
        say($("dec-live").checked ? "Live refresh on." : "Live refresh paused.", "");
    });

    // ---------------------------------------------------- rules: the draft
    function loadRules(announce) {
        return api("GET", "/rules").then(function (res) {
            if (res.status !== 200) {
                say("Could not load the rules: " + errText(res), "err");
                return;
            }
            state.live = res.body;
            state.dirty = false;
            renderLiveInfo();
            $("rules-text").value = JSON.stringify(res.body.document, null, 2) + "\n";
            state.draftErrors = [];
            $("validate-result").hidden = true;
            $("whatif-card").hidden = true;
            draftChanged();
            if (announce) say("Loaded the live rules (version " + res.body.version + ").", "ok");
        });
    }

    function renderLiveInfo() {
        var l = state.live;
        if (!l) return;
        $("rules-live").textContent = "Live: version " + l.version +
            (l.rules_version ? " (file version " + l.rules_version + ")" : "") +
            (l.author ? ", by " + l.author : "") + (l.time ? " at " + fmtTime(l.time) + " UTC" : "") +
            (l.comment ? ": " + l.comment : "");
    }

    /* Parses the textarea; returns the document or null (and shows why). */
    function parseDraft() {
        var text = $("rules-text").value;
        var p = $("rules-parse");
        try {
            var doc = JSON.parse(text);
            p.hidden = true;
            $("rules-text").removeAttribute("aria-invalid");
            return doc;
        } catch (e) {
            var m = /position (\d+)/.exec(e.message);
            var where = "";
            if (m) {
                var before = text.slice(0, Number(m[1])).split("\n");
                where = " (line " + before.length + ", column " + (before[before.length - 1].length + 1) + ")";
            }
            p.textContent = "Not valid JSON" + where + ": " + e.message;
            p.hidden = false;
            $("rules-text").setAttribute("aria-invalid", "true");
            return null;
        }
    }

    function draftChanged() {
        var doc = parseDraft();
        if (doc) state.draftDoc = doc;
        renderRuleList(doc || state.draftDoc, !doc);
    }

    $("rules-text").addEventListener("input", function () {
        state.dirty = true;
        // The old validation result describes another text: drop its marks.
        if (state.draftErrors.length) {
            state.draftErrors = [];
            $("validate-result").hidden = true;
        }
        if (state.parseTimer) clearTimeout(state.parseTimer);
        state.parseTimer = setTimeout(draftChanged, 250);
    });

    $("rules-format").addEventListener("click", function () {
        var doc = parseDraft();
        if (!doc) {
            say("The draft is not valid JSON; fix it first.", "err");
            return;
        }
        $("rules-text").value = JSON.stringify(doc, null, 2) + "\n";
        draftChanged();
    });

    $("rules-reload").addEventListener("click", function () {
        loadRules(true);
    });

    // A readable rendering of one condition (docs/policy.md "Conditions").
    function listOf(v) {
        return Array.isArray(v) ? v.join(", ") : str(v);
    }

    function describeValue(name, v) {
        if (v !== null && typeof v === "object" && !Array.isArray(v)) {
            if (v.in !== undefined) return name + " is one of " + listOf(v.in);
            if (v.any_of !== undefined) return name + " is any of " + listOf(v.any_of);
            if (v.all_of !== undefined) return name + " is all of " + listOf(v.all_of);
            if (v.at_least !== undefined) return name + " at least " + str(v.at_least);
            if (v.at_most !== undefined) return name + " at most " + str(v.at_most);
            if (v.prefix !== undefined) return name + " starts with " + listOf(v.prefix);
            if (v.equals !== undefined) return name + " equals " + str(v.equals);
            return name + " " + JSON.stringify(v);
        }
        return name + " is " + listOf(v);
    }

    function describeCond(c) {
        if (c === null || typeof c !== "object" || Array.isArray(c)) return el("li", { text: "(not a condition: " + str(c) + ")" });
        var keys = Object.keys(c);
        if (keys.length !== 1) return el("li", { text: "(a condition has exactly one key: " + JSON.stringify(c) + ")" });
        var k = keys[0], v = c[k];
        if (k === "all" || k === "any") {
            var parts = Array.isArray(v) ? v.map(describeCond) : [el("li", { text: str(v) })];
            return el("li", null, k === "all" ? "all of:" : "any of:", el("ul", null, parts));
        }
        if (k === "not") return el("li", null, "not:", el("ul", null, describeCond(v)));
        var t;
        switch (k) {
        case "group": t = describeValue("group", v); break;
        case "user": t = describeValue("user", v); break;
        case "email": t = describeValue("email", v); break;
        case "email_domain": t = describeValue("email domain", v); break;
        case "device_tier": t = describeValue("device tier", v); break;
        case "device_score": t = describeValue("device score", v); break;
        case "country": t = describeValue("country", v); break;
        case "ip": t = describeValue("client address", v); break;
        case "method": t = describeValue("method", v); break;
        case "path": t = describeValue("path", v); break;
        case "device_owner_is_user": t = v === true ? "the device's owner is the user" : "device_owner_is_user " + str(v); break;
        case "device_attr":
            if (v && typeof v === "object") {
                var rest = Object.assign({}, v);
                delete rest.name;
                t = describeValue("device attribute " + str(v.name), rest.is !== undefined ? { equals: rest.is } : rest);
            } else {
                t = "device_attr " + str(v);
            }
            break;
        case "time":
            if (v && typeof v === "object") {
                t = "time" + (v.days ? " " + listOf(v.days) : "") +
                    (v.between ? " between " + listOf(v.between).replace(", ", " and ") : "") +
                    (v.tz ? " (" + v.tz + ")" : "");
            } else {
                t = "time " + str(v);
            }
            break;
        case "auth_age":
            if (v && typeof v === "object") {
                t = "signed in" + (v.max ? " within " + v.max : "") + (v.mfa ? ", with MFA" : "");
            } else {
                t = "auth_age " + str(v);
            }
            break;
        default:
            t = k + ": " + JSON.stringify(v);
        }
        return el("li", { text: t });
    }

    function ruleIndexOfError(err, rules) {
        var m = /^\$\.rules\[(\d+)\]/.exec(err.path || "");
        if (m) return Number(m[1]);
        if (err.rule != null && Array.isArray(rules)) {
            for (var i = 0; i < rules.length; i++) {
                if (rules[i] && rules[i].id === err.rule) return i;
            }
        }
        return -1;
    }

    function renderRuleList(doc, stale) {
        var ol = clear($("rule-list"));
        var rules = doc && Array.isArray(doc.rules) ? doc.rules : null;
        if (!rules) {
            ol.appendChild(el("li", { class: "meta", text: doc ? "The draft has no \"rules\" list." : "Nothing to show yet." }));
            return;
        }
        if (stale) ol.appendChild(el("li", { class: "error", text: "The draft does not parse: this list shows its last valid state." }));
        var byIndex = {};
        state.draftErrors.forEach(function (e) {
            var i = ruleIndexOfError(e, rules);
            (byIndex[i] = byIndex[i] || []).push(e);
        });
        rules.forEach(function (r, i) {
            r = r || {};
            var effect = r.effect === "allow" || r.effect === "deny" ? r.effect : "";
            var routes = r.route == null ? "every route" : "route " + listOf(r.route);
            var errs = byIndex[i] || [];
            var li = el("li", {
                class: "rule-item " + effect + (errs.length ? " has-error" : ""),
                id: "rule-" + i,
                "data-rule-id": r.id != null ? String(r.id) : "",
                "aria-invalid": errs.length ? "true" : null
            },
            el("div", { class: "rule-head" },
                el("span", { class: "rule-id", text: r.id != null ? String(r.id) : "(no id)" }),
                effect ? badge(effect) : badge(str(r.effect) || "no effect", "unknown"),
                r.mode === "monitor" ? badge("monitor", "monitor") : null,
                el("span", { class: "rule-scope", text: "#" + (i + 1) + " · " + routes }),
                el("button", { type: "button", class: "secondary small edit-json",
                    "aria-label": "Edit rule " + (r.id != null ? r.id : "#" + (i + 1)) + " in the JSON",
                    onclick: function () { selectRuleText(r.id, i); } }, "Edit in JSON")),
            r.description ? el("p", { class: "rule-desc", text: r.description }) : null,
            el("ul", { class: "rule-when", "aria-label": "conditions" },
                r.when !== undefined ? describeCond(r.when) : el("li", { text: "(no conditions: \"when\" is missing)" })),
            r.deny_message ? el("p", { class: "rule-desc", text: "Message: " + r.deny_message }) : null,
            errs.length ? el("ul", { class: "rule-errors", role: "list", "aria-label": "errors in this rule" },
                errs.map(function (e) {
                    return el("li", { class: "rule-error" }, e.message || "invalid",
                        e.path ? el("span", { class: "path", text: " at " + e.path }) : null);
                })) : null);
            ol.appendChild(li);
        });
    }

    /* Puts the caret on rule i's "id" line in the textarea (by id; the
     * i-th "id" key when the id is missing or repeats). */
    function selectRuleText(id, i) {
        var ta = $("rules-text");
        var text = ta.value;
        var at = -1;
        if (id != null) {
            var re = new RegExp('"id"\\s*:\\s*' + JSON.stringify(String(id)).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
            var m = re.exec(text);
            if (m) at = m.index;
        }
        if (at < 0) {
            var n = -1, re2 = /"id"\s*:/g, m2;
            while ((m2 = re2.exec(text)) !== null) {
                if (++n === i) {
                    at = m2.index;
                    break;
                }
            }
        }
        ta.focus();
        if (at < 0) return;
        var end = text.indexOf("\n", at);
        ta.setSelectionRange(at, end < 0 ? text.length : end);
        // Scroll the selection into view: the line's share of the text height.
        var line = text.slice(0, at).split("\n").length - 1;
        var lines = text.split("\n").length;
        ta.scrollTop = Math.max(0, ta.scrollHeight * line / lines - ta.clientHeight / 3);
    }

    function draftOrSay() {
        var doc = parseDraft();
        if (!doc) say("The draft is not valid JSON; see the message under the editor.", "err");
        return doc;
    }

    /* Shows errors from validate or a refused apply, at their rules. */
    function showErrors(errors, what) {
        var doc = state.draftDoc;
        state.draftErrors = errors.slice();
        renderRuleList(doc, false);
        var rules = doc && Array.isArray(doc.rules) ? doc.rules : [];
        var box = clear($("validate-result"));
        box.className = "result bad";
        box.hidden = false;
        box.appendChild(el("p", { class: "error", text: what + ": " + errors.length + " error" + (errors.length === 1 ? "" : "s") + ". Nothing was changed." }));
        box.appendChild(el("ul", null, errors.map(function (e) {
            var i = ruleIndexOfError(e, rules);
            var label = i >= 0 ? "rule " + (rules[i] && rules[i].id ? rules[i].id : "#" + (i + 1)) : "document";
            var li = el("li", null, el("strong", { text: label + ": " }), e.message || "invalid",
                e.path ? el("span", { class: "mono-cell", text: " (" + e.path + ")" }) : null);
            if (i >= 0) {
                li.appendChild(document.createTextNode(" "));
                li.appendChild(el("a", { href: "#rules", text: "show", onclick: function (ev) {
                    ev.preventDefault();
                    var t = $("rule-" + i);
                    if (t) {
                        t.setAttribute("tabindex", "-1");
                        t.scrollIntoView({ block: "center" });
                        t.focus();
                    }
                } }));
            }
            return li;
        })));
        var first = errors.length ? $("rule-" + ruleIndexOfError(errors[0], rules)) : null;
        if (first) first.scrollIntoView({ block: "nearest" });
    }

    $("rules-validate").addEventListener("click", function () {
        var doc = draftOrSay();
        if (!doc) return;
        state.draftDoc = doc;
        say("Validating…", "");
        api("POST", "/rules/validate", doc).then(function (res) {
            if (res.status === 200 && res.body && res.body.ok) {
                state.draftErrors = [];
                renderRuleList(doc, false);
                var box = clear($("validate-result"));
                box.className = "result ok";
                box.hidden = false;
                box.textContent = "Valid: " + (res.body.rules != null ? res.body.rules + " rules" : "no errors") + ". Not applied yet.";
                say("The draft is valid.", "ok");
            } else if (res.status === 422 && res.body && Array.isArray(res.body.errors)) {
                showErrors(res.body.errors, "Validation failed");
                say("The draft has " + res.body.errors.length + " error" + (res.body.errors.length === 1 ? "" : "s") + "; each is shown at its rule.", "err");
            } else {
                say("Validation failed: " + errText(res), "err");
            }
        });
    });

    // ------------------------------------------------------------- what-if
    function fillChanges(table, rows) {
        var tb = clear(table.tBodies[0]);
        if (!rows || !rows.length) {
            emptyRow(tb, 7, "Nobody.");
            return;
        }
        rows.forEach(function (g) {
            tb.appendChild(el("tr", null,
                el("td", { text: g.route || "—" }), el("td", { text: g.user || "—" }),
                el("td", { class: "mono-cell", text: g.device || "—" }), el("td", { class: "num", text: str(g.count) }),
                el("td", null, badge(g.was || "unknown", g.was)), el("td", null, badge(g.now || "unknown", g.now)),
                el("td", { class: "mono-cell", text: g.rule || "" })));
        });
    }

    $("rules-whatif").addEventListener("click", function () {
        var doc = draftOrSay();
        if (!doc) return;
        say("Replaying recent decisions against the draft…", "");
        api("POST", "/whatif", { document: doc }).then(function (res) {
            if (res.status === 422 && res.body && Array.isArray(res.body.errors)) {
                state.draftDoc = doc;
                showErrors(res.body.errors, "What-if refused the draft");
                say("The draft has errors; fix them before the replay.", "err");
                return;
            }
            if (res.status !== 200 || !res.body) {
                say("What-if failed: " + errText(res), "err");
                return;
            }
            var w = res.body;
            $("whatif-card").hidden = false;
            $("whatif-summary").textContent = "Replayed " + (w.replayed || 0) + " recent decision" + (w.replayed === 1 ? "" : "s") +
                (w.skipped ? " (" + w.skipped + " could not be replayed)" : "") +
                ": " + (w.gains || []).length + " (route, user, device) would gain access, " + (w.losses || []).length + " would lose it.";
            fillChanges($("whatif-gains"), w.gains);
            fillChanges($("whatif-losses"), w.losses);
            var tb = clear($("whatif-routes").tBodies[0]);
            var routes = Object.keys(w.by_route || {}).sort();
            if (!routes.length) emptyRow(tb, 4, "No recorded decisions.");
            routes.forEach(function (r) {
                var x = w.by_route[r] || {};
                tb.appendChild(el("tr", null, el("td", { text: r }), el("td", { class: "num", text: str(x.gains || 0) }),
                    el("td", { class: "num", text: str(x.losses || 0) }), el("td", { class: "num", text: str(x.unchanged || 0) })));
            });
            say("What-if: " + (w.gains || []).length + " gain, " + (w.losses || []).length + " lose.", "ok");
            $("whatif-h").scrollIntoView({ block: "nearest" });
        });
    });

    // ------------------------------------------------------------- dry run
    $("dry-form").addEventListener("submit", function (ev) {
        ev.preventDefault();
        var ctx = {};
        ["user", "device", "ip", "route", "path"].forEach(function (k) {
            var v = $("dry-" + k).value.trim();
            if (v) ctx[k] = v;
        });
        var country = $("dry-country").value.trim();
        if (country) ctx.country = country.toLowerCase() === "unknown" ? "unknown" : country.toUpperCase();
        if (ctx.user && ctx.user.indexOf("@") > 0) ctx.email = ctx.user;
        var t = $("dry-time").value;
        if (t) ctx.time = (t.length === 16 ? t + ":00" : t) + "Z";
        ctx.method = $("dry-method").value;
        ctx.mfa = $("dry-mfa").checked;
        var body = { context: ctx };
        var against = $("dry-draft").checked ? "draft" : "live";
        if (against === "draft") {
            var doc = draftOrSay();
            if (!doc) return;
            body.document = doc;
        }
        api("POST", "/explain", body).then(function (res) {
            var box = clear($("dry-result"));
            box.hidden = false;
            if (res.status === 422 && res.body && Array.isArray(res.body.errors)) {
                box.className = "result bad";
                box.textContent = "The draft has errors; validate it to see them at their rules.";
                say("Dry run refused: the draft has errors.", "err");
                return;
            }
            if (res.status !== 200 || !res.body) {
                box.className = "result bad";
                box.textContent = "Dry run failed: " + errText(res);
                say(box.textContent, "err");
                return;
            }
            renderExplain(box, res.body, against);
            say("Dry run against the " + against + ": " + res.body.decision + " by " + res.body.rule + ".", "ok");
        });
    });

    function renderExplain(box, x, against) {
        box.className = "result " + (x.decision === "allow" ? "ok" : "bad");
        box.appendChild(el("p", { class: "decision-line" }, "Against the " + against + " rules: ", badge(x.decision || "unknown", x.decision),
            " by rule ", el("strong", { class: "mono-cell", id: "dry-rule", text: x.rule || "?" })));
        if (x.deny_message) box.appendChild(el("p", { text: "Message shown: " + x.deny_message }));
        box.appendChild(el("h4", { text: "Reasons" }));
        box.appendChild(el("ul", { id: "dry-reasons" }, (x.reasons || []).length ?
            x.reasons.map(function (r) { return el("li", { text: r }); }) : el("li", { text: "(none given)" })));
        if (x.step_up) {
            box.appendChild(el("p", { text: "Step-up: sign in again" + (x.step_up.max_age >= 0 ? " (max age " + x.step_up.max_age + " s)" : "") + (x.step_up.mfa ? " with MFA" : "") + "." }));
        }
        if (x.context && typeof x.context === "object") {
            var dl = el("dl", { class: "kv" });
            Object.keys(x.context).forEach(function (k) {
                dl.appendChild(el("dt", { text: k }));
                var v = x.context[k];
                dl.appendChild(el("dd", { text: v == null || v === "" ? "(unknown)" : Array.isArray(v) && !v.length ? "(none)" : listOf(v) }));
            });
            box.appendChild(el("h4", { text: "Context as resolved" }));
            box.appendChild(dl);
        }
        if (Array.isArray(x.rules) && x.rules.length) {
            box.appendChild(el("h4", { text: "Every rule on the route" }));
            var tbody = el("tbody");
            x.rules.forEach(function (r) {
                var conds = el("ul", { class: "cond" }, (r.conditions || []).map(function (c) {
                    var pad = "\u00a0\u00a0".repeat(c.depth || 0);
                    var res = c.result === "combinator" ? "" : "[" + c.result + "] ";
                    return el("li", { class: "r-" + c.result, text: pad + res + (c.text || "") });
                }));
                tbody.appendChild(el("tr", null, el("td", { class: "mono-cell", text: r.id }),
                    el("td", null, badge(r.effect, r.effect), r.mode === "monitor" ? badge("monitor", "monitor") : null),
                    el("td", { text: str(r.result).replace("_", " ") }), el("td", null, conds)));
            });
            box.appendChild(el("div", { class: "table-wrap" }, el("table", { class: "data" },
                el("thead", null, el("tr", null, el("th", { scope: "col", text: "Rule" }), el("th", { scope: "col", text: "Effect" }),
                    el("th", { scope: "col", text: "Result" }), el("th", { scope: "col", text: "Conditions" }))), tbody)));
        }
    }

    // --------------------------------------------------------------- apply
    $("apply-form").addEventListener("submit", function (ev) {
        ev.preventDefault();
        var doc = draftOrSay();
        if (!doc) return;
        state.draftDoc = doc;
        var comment = $("apply-comment").value.trim();
        if (!comment) {
            say("Say why in the comment before applying.", "err");
            $("apply-comment").focus();
            return;
        }
        var body = { document: doc, comment: comment };
        if (state.live && state.live.version != null) body.base_version = state.live.version;
        say("Applying…", "");
        api("PUT", "/rules", body).then(function (res) {
            if (res.status === 200) {
                $("apply-comment").value = "";
                state.draftErrors = [];
                $("validate-result").hidden = true;
                say("Applied: the rules are live as version " + (res.body && res.body.version) + ".", "ok");
                loadRules(false).then(loadHistory);
            } else if (res.status === 422 && res.body && Array.isArray(res.body.errors)) {
                showErrors(res.body.errors, "Not applied");
                say("Not applied: the draft has " + res.body.errors.length + " error" + (res.body.errors.length === 1 ? "" : "s") + ". The live rules did not change.", "err");
            } else if (res.status === 409) {
                say("Not applied: someone changed the live rules since you loaded them. Reload (your draft will be replaced) or copy your changes first.", "err");
            } else {
                say("Not applied: " + errText(res), "err");
            }
        });
    });

    // ------------------------------------------------------------- history
    function loadHistory() {
        return api("GET", "/rules/history").then(function (res) {
            var tb = clear($("history-body"));
            if (res.status !== 200 || !res.body) {
                emptyRow(tb, 6, "Could not load the history: " + errText(res));
                return;
            }
            var vs = res.body.versions || [];
            if (!vs.length) emptyRow(tb, 6, "No history yet.");
            var liveV = state.live ? state.live.version : null;
            vs.forEach(function (v, i) {
                var prev = vs[i + 1];
                var isLive = v.version === liveV || (liveV == null && i === 0);
                var actions = el("div", { class: "buttons" });
                if (prev) {
                    actions.appendChild(el("button", { type: "button", class: "secondary small",
                        "aria-label": "Diff version " + v.version + " with version " + prev.version,
                        onclick: function () { showDiff(prev.version, v.version); } }, "Diff with v" + prev.version));
                }
                if (!isLive && liveV != null) {
                    actions.appendChild(el("button", { type: "button", class: "secondary small",
                        "aria-label": "Diff version " + v.version + " with the live version",
                        onclick: function () { showDiff(v.version, liveV); } }, "Diff with live"));
                    actions.appendChild(el("button", { type: "button", class: "danger small",
                        "aria-label": "Roll back to version " + v.version,
                        onclick: function () { rollback(v.version); } }, "Roll back to this"));
                }
                tb.appendChild(el("tr", { "data-version": String(v.version) },
                    el("td", null, "v" + v.version, isLive ? " " : null, isLive ? badge("live", "active") : null),
                    el("td", { class: "mono-cell", text: fmtTime(v.time) }),
                    el("td", { text: v.author || "" }), el("td", { text: v.comment || "" }),
                    el("td", { class: "num", text: v.rules != null ? str(v.rules) : "" }),
                    el("td", null, actions)));
            });
        });
    }

    function showDiff(from, to) {
        api("GET", "/rules/diff?from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to)).then(function (res) {
            if (res.status !== 200 || !res.body) {
                say("Could not load the diff: " + errText(res), "err");
                return;
            }
            var d = res.body;
            $("diff-view").hidden = false;
            $("diff-h").textContent = "Changes from v" + from + " to v" + to;
            var r = d.rules || {};
            var parts = [];
            if ((r.added || []).length) parts.push("added: " + r.added.join(", "));
            if ((r.removed || []).length) parts.push("removed: " + r.removed.join(", "));
            if ((r.changed || []).length) parts.push("changed: " + r.changed.join(", "));
            $("diff-summary").textContent = parts.length ? "Rules " + parts.join("; ") + "." : "No rule changed.";
            var pre = clear($("diff-text"));
            String(d.diff || "").split("\n").forEach(function (line) {
                var cls = "";
                if (/^\+\+\+|^---/.test(line)) cls = "hunk";
                else if (line.charAt(0) === "+") cls = "add";
                else if (line.charAt(0) === "-") cls = "del";
                else if (line.slice(0, 2) === "@@") cls = "hunk";
                if (cls) pre.appendChild(el("span", { class: cls, text: line }));
                else pre.appendChild(document.createTextNode(line + "\n"));
            });
            say("Showing the diff from v" + from + " to v" + to + ".", "");
            $("diff-text").focus();
        });
    }

    function rollback(version) {
        confirmAction("Roll back to version " + version + "?",
            "Version " + version + "'s rules become live again (as a new version) on the next request.",
            "Roll back to v" + version).then(function (c) {
            if (!c.ok) {
                say("Rollback cancelled.", "");
                return;
            }
            api("POST", "/rules/rollback", { version: version, comment: c.comment || ("rollback to v" + version) }).then(function (res) {
                if (res.status === 200) {
                    say("Rolled back: version " + version + "'s rules are live as version " + (res.body && res.body.version) + ".", "ok");
                    loadRules(false).then(loadHistory);
                } else {
                    say("Rollback failed: " + errText(res), "err");
                }
            });
        });
    }

    // ------------------------------------------------------------- confirm
    /* A modal <dialog> with a comment; resolves to {ok, comment}. */
    function confirmAction(title, text, okLabel) {
        var d = $("confirm");
        $("confirm-h").textContent = title;
        $("confirm-text").textContent = text;
        $("confirm-ok").textContent = okLabel || "Confirm";
        $("confirm-comment").value = "";
        var opener = document.activeElement;
        return new Promise(function (resolve) {
            function done() {
                d.removeEventListener("close", done);
                var ok = d.returnValue === "ok";
                resolve({ ok: ok, comment: $("confirm-comment").value.trim() });
                if (opener && opener.focus && document.contains(opener)) opener.focus();
            }
            d.returnValue = "";
            d.addEventListener("close", done);
            d.showModal();
            $("confirm-comment").focus();
        });
    }

    // ------------------------------------------------------------- devices
    function deviceQuery() {
        var q = [];
        var tier = $("dev-tier").value.trim(), st = $("dev-status").value, owner = $("dev-owner").value.trim();
        if (tier) q.push("tier=" + encodeURIComponent(tier));
        if (st) q.push("status=" + encodeURIComponent(st));
        if (owner) q.push("owner=" + encodeURIComponent(owner));
        if ($("dev-stale").checked) q.push("stale=1");
        return q.length ? "?" + q.join("&") : "";
    }

    function loadDevices() {
        return api("GET", "/devices" + deviceQuery()).then(function (res) {
            var tb = clear($("dev-body"));
            if (res.status !== 200 || !res.body) {
                $("dev-meta").textContent = "";
                emptyRow(tb, 8, "Could not load the devices: " + errText(res));
                return;
            }
            var list = res.body.devices || [];
            state.devices = list;
            $("dev-meta").textContent = list.length + " device" + (list.length === 1 ? "" : "s") + ".";
            if (!list.length) emptyRow(tb, 8, "No devices match.");
            list.forEach(function (d) {
                var failing = d.failing || [];
                tb.appendChild(el("tr", { "data-device": d.id },
                    el("td", { class: "mono-cell" }, el("a", { href: "#devices", text: d.id, onclick: function (ev) {
                        ev.preventDefault();
                        showDevice(d.id);
                    } })),
                    el("td", { text: d.owner || "" }),
                    el("td", { class: "dev-status" }, badge(d.status || "unknown", d.status || "unknown"),
                        d.override ? el("div", { class: "meta", text: "set by an admin" }) : null,
                        d.known === false ? el("div", { class: "meta", text: "not in the inventory" }) : null),
                    el("td", { class: "dev-tier", text: d.tier || "" }),
                    el("td", { class: "num", text: str(d.score) }),
                    el("td", { class: "dev-failing", text: failing.length ? failing.join(", ") : "none" }),
                    el("td", { text: fmtAge(d.posture_age) + (d.posture_stale ? " (stale)" : "") }),
                    el("td", null, statusButton(d))));
            });
        });
    }

    function statusButton(d) {
        var lost = d.status === "lost" || d.status === "stolen";
        return el("button", { type: "button", class: (lost ? "secondary" : "danger") + " small",
            "aria-label": (lost ? "Mark " + d.id + " active" : "Mark " + d.id + " lost"),
            onclick: function () { setStatus(d.id, lost ? "active" : "lost"); } }, lost ? "Mark active" : "Mark lost");
    }

    function setStatus(id, status) {
        var text = status === "lost" ?
            "Device " + id + " is refused from its next request on, until it is marked active again." :
            "Device " + id + " is trusted again as its checks allow (the override wins over the inventory feed).";
        confirmAction("Mark " + id + " " + status + "?", text, "Mark " + status).then(function (c) {
            if (!c.ok) {
                say("Nothing changed.", "");
                return;
            }
            var body = { status: status };
            if (c.comment) body.comment = c.comment;
            api("PUT", "/devices/" + encodeURIComponent(id) + "/status", body).then(function (res) {
                if (res.status === 200 || res.status === 204) {
                    say("Device " + id + " is marked " + status + ".", "ok");
                    loadDevices();
                    if (state.detailId === id) showDevice(id);
                } else {
                    say("Could not change " + id + ": " + errText(res), "err");
                }
            });
        });
    }

    function fillKv(dl, obj) {
        clear(dl);
        if (!obj || typeof obj !== "object") {
            dl.appendChild(el("dt", { text: "—" }));
            dl.appendChild(el("dd", { text: "none" }));
            return;
        }
        Object.keys(obj).forEach(function (k) {
            var v = obj[k];
            if (v && typeof v === "object" && !Array.isArray(v)) {
                Object.keys(v).forEach(function (k2) {
                    dl.appendChild(el("dt", { text: k + "." + k2 }));
                    dl.appendChild(el("dd", { text: str(v[k2]) }));
                });
                return;
            }
            dl.appendChild(el("dt", { text: k }));
            dl.appendChild(el("dd", { text: Array.isArray(v) ? v.join(", ") : str(v) }));
        });
    }

    function showDevice(id) {
        api("GET", "/devices/" + encodeURIComponent(id)).then(function (res) {
            if (res.status !== 200 || !res.body) {
                say("Could not load device " + id + ": " + errText(res), "err");
                return;
            }
            var d = res.body;
            state.detailId = id;
            var box = $("dev-detail");
            box.hidden = false;
            $("dev-detail-h").textContent = "Device " + d.id;
            var sum = clear($("dev-detail-summary"));
            sum.appendChild(document.createTextNode("Owner " + (d.owner || "unknown") + " · status "));
            sum.appendChild(badge(d.status || "unknown", d.status || "unknown"));
            sum.appendChild(document.createTextNode(" · tier " + (d.tier || "?") + " · score " + str(d.score) +
                " · posture " + fmtAge(d.posture_age) + (d.posture_stale ? " (stale)" : "")));
            var acts = clear($("dev-detail-actions"));
            acts.appendChild(statusButton(d));
            var tb = clear($("dev-checks").tBodies[0]);
            var checks = d.checks || [];
            if (!checks.length) emptyRow(tb, 6, "No checks.");
            checks.forEach(function (c) {
                tb.appendChild(el("tr", null, el("td", { class: "mono-cell", text: c.id }),
                    el("td", null, c.ok ? badge("ok", "ok") : c.in_grace ? badge("fail (grace)", "unknown") : badge("fail", "fail")),
                    el("td", { class: "num", text: str(c.points) }), el("td", { text: c.hard ? "yes" : "no" }),
                    el("td", { text: c.in_grace ? "yes" : "no" }), el("td", { text: c.ok ? "" : (c.remediation || "") })));
            });
            fillKv($("dev-posture"), d.posture);
            fillKv($("dev-inventory"), d.inventory);
            box.focus();
        });
    }

    $("dev-filters").addEventListener("submit", function (ev) {
        ev.preventDefault();
        loadDevices();
    });
    $("dev-clear").addEventListener("click", function () {
        $("dev-tier").value = "";
        $("dev-status").value = "";
        $("dev-owner").value = "";
        $("dev-stale").checked = false;
        loadDevices();
    });

    // Refresh a page's data when it is shown again via its nav link.
    PAGES.forEach(function (p) {
        $("nav-" + p).addEventListener("click", function () {
            if (state.page !== p) return;
            if (p === "rules") loadHistory();
            else if (p === "devices") loadDevices();
        });
    });

    start();
})();
