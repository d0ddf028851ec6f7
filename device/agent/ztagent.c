/*
 * ztagent.c - the device agent: measures the device's posture (collect.c)
 * and POSTs it to the proxy's /.zt/device/posture over mutual TLS with the
 * device certificate. docs/ztagent.md is the manual.
 *
 * Not an event-loop server: one blocking libcurl easy transfer per report,
 * bounded by timeouts, then a sleep that SIGTERM interrupts. Signals are
 * blocked except while sleeping, so a stop request is never lost between
 * the check and the sleep; during a transfer the progress callback polls
 * for a pending SIGTERM and aborts it.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "collect.h"
#include "log.h"

/* Exit codes (docs/ztagent.md). */
#define AGENT_EXIT_OK 0
#define AGENT_EXIT_NET 1     /* no answer: DNS, TCP, TLS, timeout (curl's message) */
#define AGENT_EXIT_USAGE 2   /* bad option, URL or file: fix the invocation */
#define AGENT_EXIT_REFUSED 3 /* the proxy answered, but not 2xx (its message) */

#define AGENT_INTERVAL_DEFAULT 300
#define AGENT_INTERVAL_MIN 10
#define AGENT_INTERVAL_MAX 86400
#define AGENT_TIMEOUT_DEFAULT 30
#define AGENT_TIMEOUT_MIN 1
#define AGENT_TIMEOUT_MAX 300
#define AGENT_CONNECT_TIMEOUT 10
#define AGENT_BACKOFF_FIRST 30 /* seconds after the first failure, doubling */
#define AGENT_BACKOFF_MAX 3600 /* never wait longer than an hour */
#define AGENT_BODY_MAX 4096    /* bytes of a response body kept for the message */
#define AGENT_MSG_MAX 512      /* one line reported per failed attempt */
#define AGENT_RESOLVE_MAX 16   /* --resolve entries */
#define AGENT_DEFAULT_PATH "/.zt/device/posture"

enum agent_mode { AGENT_MODE_DAEMON = 0, AGENT_MODE_ONCE, AGENT_MODE_PRINT };

enum agent_result {
    AGENT_SENT = 0, /* 2xx */
    AGENT_NET_FAIL, /* no HTTP answer */
    AGENT_REFUSED,  /* an HTTP answer that is not 2xx */
    AGENT_STOPPED   /* SIGTERM during the transfer */
};

/* Read-only after agent_conf_load(). */
struct agent_conf {
    enum agent_mode mode;
    int mode_set;
    const char *cert, *key, *ca, *root;
    char *url; /* normalised by agent_check_url(); heap */
    const char *url_arg;
    struct curl_slist *resolve;
    int nresolve;
    long interval, timeout;
    int verbose;
    char cred[3][PATH_MAX]; /* $CREDENTIALS_DIRECTORY defaults */
};

static volatile sig_atomic_t agent_stop;

static void agent_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Startup and --once messages: one plain line on stderr, as a CLI tool. */
static void agent_errx(const char *fmt, ...)
{
    va_list ap;

    fputs("ztagent: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void agent_usage(FILE *f)
{
    fprintf(f,
            "usage: ztagent [--print | --once] [options]\n"
            "\n"
            "Collects this device's posture and reports it to ztproxy (docs/ztagent.md).\n"
            "Without --print or --once it runs as a daemon, reporting every --interval.\n"
            "\n"
            "  --url URL          https://HOST[:PORT]/.zt/device/posture  (ZTAGENT_URL)\n"
            "  --cert FILE        device certificate, PEM                 (ZTAGENT_CERT)\n"
            "  --key FILE         device private key, PEM, unencrypted    (ZTAGENT_KEY)\n"
            "  --ca FILE          CA of the proxy's certificate, PEM      (ZTAGENT_CA)\n"
            "  --resolve H:P:A    connect to address A for host H, port P (like curl)\n"
            "  --interval SECS    daemon period, %d-%d, default %d      (ZTAGENT_INTERVAL)\n"
            "  --timeout SECS     per report, %d-%d, default %d           (ZTAGENT_TIMEOUT)\n"
            "  --root DIR         read system files under DIR (default /)\n"
            "  --print            print the report as JSON, send nothing\n"
            "  --once             send one report and exit\n"
            "  -v, --verbose      explain how each field was determined\n"
            "  -V, --version      print the version\n"
            "  -h, --help         this text\n"
            "\n"
            "exit: 0 ok, 1 proxy unreachable, 2 bad usage or files, 3 report refused\n",
            AGENT_INTERVAL_MIN, AGENT_INTERVAL_MAX, AGENT_INTERVAL_DEFAULT, AGENT_TIMEOUT_MIN,
            AGENT_TIMEOUT_MAX, AGENT_TIMEOUT_DEFAULT);
}

/* ---- configuration --------------------------------------------------------- */

static int agent_parse_long(const char *what, const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        agent_errx("%s: expected a whole number of seconds from %ld to %ld, got \"%s\"", what, min,
                   max, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* HOST:PORT:ADDR[,ADDR...], as curl's --resolve; a leading '+' or '-' is curl's too. */
static int agent_check_resolve(const char *s)
{
    const char *p = s, *c1, *c2;
    char *end;
    long port;

    if (*p == '+' || *p == '-')
        p++;
    c1 = strchr(p, ':');
    c2 = c1 == NULL ? NULL : strchr(c1 + 1, ':');
    if (c1 == NULL || c2 == NULL || c1 == p || c2[1] == '\0')
        goto bad;
    errno = 0;
    port = strtol(c1 + 1, &end, 10);
    if (errno != 0 || end != c2 || port < 1 || port > 65535)
        goto bad;
    return 0;
bad:
    agent_errx("--resolve: expected HOST:PORT:ADDRESS (e.g. app.test:8443:127.0.0.1), got \"%s\"",
               s);
    return -1;
}

/*
 * The URL must be https (the device key is for mutual TLS; http would send
 * the report in the clear and be refused anyway). A bare origin gets the
 * posture path. On success c->url is a normalised heap copy.
 */
static int agent_check_url(struct agent_conf *c)
{
    char *scheme = NULL, *host = NULL, *path = NULL, *full = NULL;
    CURLU *u;
    int rc = -1;

    u = curl_url();
    if (u == NULL) {
        agent_errx("out of memory");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, c->url_arg, 0) != CURLUE_OK) {
        agent_errx("--url: \"%s\" is not a URL (expected https://HOST[:PORT]%s)", c->url_arg,
                   AGENT_DEFAULT_PATH);
        goto done;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        strcmp(scheme, "https") != 0) {
        agent_errx("--url: \"%s\" must start with https:// (reports go over mutual TLS)",
                   c->url_arg);
        goto done;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        agent_errx("--url: \"%s\" has no host", c->url_arg);
        goto done;
    }
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK || strcmp(path, "/") == 0) {
        if (curl_url_set(u, CURLUPART_PATH, AGENT_DEFAULT_PATH, 0) != CURLUE_OK)
            goto done;
    }
    if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        agent_errx("--url: \"%s\" cannot be used", c->url_arg);
        goto done;
    }
    c->url = strdup(full);
    if (c->url == NULL) {
        agent_errx("out of memory");
        goto done;
    }
    rc = 0;
done:
    curl_free(full);
    curl_free(path);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

/* PEM passphrase callback: ztagent never prompts, so an encrypted key fails clearly. */
static int agent_no_passphrase(char *buf, int size, int rwflag, void *ud)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)ud;
    return -1;
}

static FILE *agent_open(const char *opt, const char *path)
{
    FILE *f;

    f = fopen(path, "r");
    if (f == NULL)
        agent_errx("%s %s: %s", opt, path, strerror(errno));
    return f;
}

/*
 * Load the certificate, key and CA once at startup so that a typo is exit 2
 * with the file named, not a TLS failure at 3 a.m. The key is parsed only
 * to check it; OpenSSL wipes it on free, and it is never printed.
 */
static int agent_check_files(const struct agent_conf *c)
{
    X509 *cert = NULL, *ca = NULL;
    EVP_PKEY *key = NULL;
    struct stat st;
    FILE *f = NULL;
    int rc = -1;

    f = agent_open("--cert", c->cert);
    if (f == NULL)
        goto done;
    cert = PEM_read_X509(f, NULL, agent_no_passphrase, NULL);
    fclose(f);
    if (cert == NULL) {
        agent_errx("--cert %s: no PEM certificate in it", c->cert);
        goto done;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
        agent_errx("warning: --cert %s has expired; the proxy will refuse it", c->cert);

    f = agent_open("--key", c->key);
    if (f == NULL)
        goto done;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
        agent_errx("warning: --key %s is readable by everyone (chmod o-r)", c->key);
    key = PEM_read_PrivateKey(f, NULL, agent_no_passphrase, NULL);
    fclose(f);
    if (key == NULL) {
        agent_errx("--key %s: not an unencrypted PEM private key", c->key);
        goto done;
    }
    if (X509_check_private_key(cert, key) != 1) {
        agent_errx("--key %s does not belong to the certificate in --cert %s", c->key, c->cert);
        goto done;
    }
    if (c->ca != NULL) {
        f = agent_open("--ca", c->ca);
        if (f == NULL)
            goto done;
        ca = PEM_read_X509(f, NULL, agent_no_passphrase, NULL);
        fclose(f);
        if (ca == NULL) {
            agent_errx("--ca %s: no PEM certificate in it", c->ca);
            goto done;
        }
    }
    rc = 0;
done:
    ERR_clear_error();
    X509_free(ca);
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

enum {
    OPT_URL = 256,
    OPT_CERT,
    OPT_KEY,
    OPT_CA,
    OPT_RESOLVE,
    OPT_INTERVAL,
    OPT_TIMEOUT,
    OPT_ROOT,
    OPT_PRINT,
    OPT_ONCE
};

static const struct option agent_options[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"ca", required_argument, NULL, OPT_CA},
    {"resolve", required_argument, NULL, OPT_RESOLVE},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"root", required_argument, NULL, OPT_ROOT},
    {"print", no_argument, NULL, OPT_PRINT},
    {"once", no_argument, NULL, OPT_ONCE},
    {"verbose", no_argument, NULL, 'v'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int agent_set_mode(struct agent_conf *c, enum agent_mode m)
{
    if (c->mode_set && c->mode != m) {
        agent_errx("--print and --once exclude each other");
        return -1;
    }
    c->mode = m;
    c->mode_set = 1;
    return 0;
}

/* Environment first, the command line over it, $CREDENTIALS_DIRECTORY for what is left. */
static int agent_conf_env(struct agent_conf *c)
{
    const char *v;

    c->url_arg = getenv("ZTAGENT_URL");
    c->cert = getenv("ZTAGENT_CERT");
    c->key = getenv("ZTAGENT_KEY");
    c->ca = getenv("ZTAGENT_CA");
    v = getenv("ZTAGENT_INTERVAL");
    if (v != NULL && agent_parse_long("ZTAGENT_INTERVAL", v, AGENT_INTERVAL_MIN, AGENT_INTERVAL_MAX,
                                      &c->interval) == -1)
        return -1;
    v = getenv("ZTAGENT_TIMEOUT");
    if (v != NULL && agent_parse_long("ZTAGENT_TIMEOUT", v, AGENT_TIMEOUT_MIN, AGENT_TIMEOUT_MAX,
                                      &c->timeout) == -1)
        return -1;
    return 0;
}

/* systemd LoadCredential=: device.crt, device.key, ca.crt in $CREDENTIALS_DIRECTORY. */
static void agent_conf_credentials(struct agent_conf *c)
{
    static const char *const names[3] = {"device.crt", "device.key", "ca.crt"};
    const char **slots[3] = {&c->cert, &c->key, &c->ca};
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    int i, n;

    if (dir == NULL || dir[0] != '/')
        return;
    for (i = 0; i < 3; i++) {
        if (*slots[i] != NULL)
            continue;
        n = snprintf(c->cred[i], sizeof(c->cred[i]), "%s/%s", dir, names[i]);
        if (n > 0 && (size_t)n < sizeof(c->cred[i]) && access(c->cred[i], F_OK) == 0)
            *slots[i] = c->cred[i];
    }
}

/*
 * Fill c from the environment and argv. Returns -1 to go on, or the exit
 * code (0 for --help and --version, AGENT_EXIT_USAGE for a bad invocation).
 */
static int agent_conf_load(struct agent_conf *c, int argc, char **argv)
{
    struct curl_slist *l;
    struct stat st;
    int ch;

    memset(c, 0, sizeof(*c));
    c->interval = AGENT_INTERVAL_DEFAULT;
    c->timeout = AGENT_TIMEOUT_DEFAULT;
    c->root = "/";
    if (agent_conf_env(c) == -1)
        return AGENT_EXIT_USAGE;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":vVh", agent_options, NULL)) != -1) {
        switch (ch) {
        case OPT_URL:
            c->url_arg = optarg;
            break;
        case OPT_CERT:
            c->cert = optarg;
            break;
        case OPT_KEY:
            c->key = optarg;
            break;
        case OPT_CA:
            c->ca = optarg;
            break;
        case OPT_RESOLVE:
            if (agent_check_resolve(optarg) == -1)
                return AGENT_EXIT_USAGE;
            if (c->nresolve == AGENT_RESOLVE_MAX) {
                agent_errx("--resolve: at most %d entries", AGENT_RESOLVE_MAX);
                return AGENT_EXIT_USAGE;
            }
            l = curl_slist_append(c->resolve, optarg);
            if (l == NULL) {
                agent_errx("out of memory");
                return AGENT_EXIT_USAGE;
            }
            c->resolve = l;
            c->nresolve++;
            break;
        case OPT_INTERVAL:
            if (agent_parse_long("--interval", optarg, AGENT_INTERVAL_MIN, AGENT_INTERVAL_MAX,
                                 &c->interval) == -1)
                return AGENT_EXIT_USAGE;
            break;
        case OPT_TIMEOUT:
            if (agent_parse_long("--timeout", optarg, AGENT_TIMEOUT_MIN, AGENT_TIMEOUT_MAX,
                                 &c->timeout) == -1)
                return AGENT_EXIT_USAGE;
            break;
        case OPT_ROOT:
            c->root = optarg;
            break;
        case OPT_PRINT:
            if (agent_set_mode(c, AGENT_MODE_PRINT) == -1)
                return AGENT_EXIT_USAGE;
            break;
        case OPT_ONCE:
            if (agent_set_mode(c, AGENT_MODE_ONCE) == -1)
                return AGENT_EXIT_USAGE;
            break;
        case 'v':
            c->verbose = 1;
            break;
        case 'V':
            printf("ztagent %s\n", ZTAGENT_VERSION);
            return AGENT_EXIT_OK;
        case 'h':
            agent_usage(stdout);
            return AGENT_EXIT_OK;
        case ':':
            agent_errx("%s needs a value", argv[optind - 1]);
            return AGENT_EXIT_USAGE;
        default:
            agent_errx("unknown option %s (see ztagent --help)", argv[optind - 1]);
            return AGENT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        agent_errx("unexpected argument \"%s\" (see ztagent --help)", argv[optind]);
        return AGENT_EXIT_USAGE;
    }
    if (c->root[0] != '/' || stat(c->root, &st) == -1 || !S_ISDIR(st.st_mode)) {
        agent_errx("--root %s: %s", c->root,
                   c->root[0] != '/' ? "must be an absolute path" : "not a directory");
        return AGENT_EXIT_USAGE;
    }
    if (c->mode == AGENT_MODE_PRINT)
        return -1; /* nothing is sent: no URL or credentials needed */
    agent_conf_credentials(c);
    if (c->url_arg == NULL || c->url_arg[0] == '\0') {
        agent_errx("--url is required (or ZTAGENT_URL), e.g. https://app.example.com%s",
                   AGENT_DEFAULT_PATH);
        return AGENT_EXIT_USAGE;
    }
    if (c->cert == NULL || c->key == NULL) {
        agent_errx("--cert and --key are required (the device certificate and its key)");
        return AGENT_EXIT_USAGE;
    }
    if (agent_check_url(c) == -1 || agent_check_files(c) == -1)
        return AGENT_EXIT_USAGE;
    return -1;
}

static void agent_conf_reset(struct agent_conf *c)
{
    curl_slist_free_all(c->resolve);
    free(c->url);
    memset(c, 0, sizeof(*c));
}

/* ---- one report -------------------------------------------------------------- */

struct agent_body {
    char buf[AGENT_BODY_MAX + 1];
    size_t len;
};

/* Keep the first AGENT_BODY_MAX bytes of the answer; the rest is read and dropped. */
static size_t agent_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct agent_body *b = ud;
    size_t n = size * nmemb, take;

    take = AGENT_BODY_MAX - b->len < n ? AGENT_BODY_MAX - b->len : n;
    memcpy(b->buf + b->len, ptr, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return n;
}

static int agent_stop_requested(void)
{
    sigset_t pending;

    if (agent_stop)
        return 1;
    if (sigpending(&pending) == -1)
        return 0;
    return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

static int agent_progress_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                             curl_off_t ulnow)
{
    (void)ud;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return agent_stop_requested(); /* non-zero aborts the transfer */
}

/* The first line of s (n bytes), printable ASCII only ('?' for the rest), bounded by len. */
static void agent_sanitize_line(const char *s, size_t n, char *out, size_t len)
{
    size_t i, o = 0;

    for (i = 0; i < n && o + 1 < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n' || ch == '\r')
            break;
        out[o++] = (char)(ch >= 0x20 && ch < 0x7f ? ch : '?');
    }
    out[o] = '\0';
}

/*
 * The server's message: ztproxy answers a refused report with
 * {"error":"rejected","message":"posture: $.x: ..."}, so the "message" of a
 * JSON object body; any other body's first line.
 */
static void agent_body_message(const struct agent_body *b, char *out, size_t len)
{
    const char *m;
    json_t *o;

    o = json_loadb(b->buf, b->len, 0, NULL);
    m = json_string_value(json_object_get(o, "message"));
    if (m != NULL)
        agent_sanitize_line(m, strlen(m), out, len);
    else
        agent_sanitize_line(b->buf, b->len, out, len);
    json_decref(o);
}

/*
 * POST json to c->url. Returns the result; *status is the HTTP status (0 if
 * none), *retry_after the Retry-After seconds of a 429/503 (0 if none), and
 * msg one line for the log: curl's error or the server's message.
 */
static enum agent_result agent_post(const struct agent_conf *c, const char *json, long *status,
                                    long *retry_after, char *msg, size_t msglen)
{
    char errbuf[CURL_ERROR_SIZE] = "", line[AGENT_MSG_MAX / 2];
    struct curl_slist *hdrs = NULL, *l;
    struct agent_body *body;
    enum agent_result r = AGENT_NET_FAIL;
    curl_off_t ra = 0;
    CURLcode cc;
    CURL *h;

    *status = 0;
    *retry_after = 0;
    body = calloc(1, sizeof(*body));
    h = curl_easy_init();
    if (body == NULL || h == NULL) {
        snprintf(msg, msglen, "out of memory");
        goto done;
    }
    l = curl_slist_append(hdrs, "Content-Type: application/json");
    if (l != NULL)
        hdrs = l;
    l = curl_slist_append(hdrs, "Expect:");
    if (l == NULL) {
        snprintf(msg, msglen, "out of memory");
        goto done;
    }
    hdrs = l;
    curl_easy_setopt(h, CURLOPT_URL, c->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "ztagent/" ZTAGENT_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(json));
    curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
    curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
    curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    if (c->ca != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (c->resolve != NULL)
        curl_easy_setopt(h, CURLOPT_RESOLVE, c->resolve);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
                     c->timeout < AGENT_CONNECT_TIMEOUT ? c->timeout : (long)AGENT_CONNECT_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, agent_write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, agent_progress_cb);

    cc = curl_easy_perform(h);
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(msg, msglen, "stopped");
        r = AGENT_STOPPED;
        goto done;
    }
    if (cc != CURLE_OK) {
        snprintf(msg, msglen, "%s: %s", c->url,
                 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
        *retry_after = ra > AGENT_BACKOFF_MAX ? AGENT_BACKOFF_MAX : (long)ra;
    agent_body_message(body, line, sizeof(line));
    if (*status >= 200 && *status < 300) {
        snprintf(msg, msglen, "report accepted (HTTP %ld)", *status);
        r = AGENT_SENT;
    } else {
        snprintf(msg, msglen, "%s: HTTP %ld: %s", c->url, *status,
                 line[0] != '\0' ? line : "(no message)");
        r = AGENT_REFUSED;
    }
done:
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    free(body);
    return r;
}

/* Measure now and send. */
static enum agent_result agent_report(const struct agent_conf *c, long *status, long *retry_after,
                                      char *msg, size_t msglen)
{
    struct posture p;
    enum agent_result r;
    char *json;

    collect_all(c->root, (int64_t)time(NULL), &p);
    json = collect_report_json(&p, 0);
    if (json == NULL) {
        *status = 0;
        *retry_after = 0;
        snprintf(msg, msglen, "cannot build the report (out of memory or bad clock)");
        return AGENT_NET_FAIL;
    }
    r = agent_post(c, json, status, retry_after, msg, msglen);
    free(json);
    return r;
}

/* ---- modes ----------------------------------------------------------------------- */

static int agent_print(const struct agent_conf *c)
{
    struct posture p;
    char *json;
    int rc = AGENT_EXIT_OK;

    collect_all(c->root, (int64_t)time(NULL), &p);
    json = collect_report_json(&p, 1);
    if (json == NULL) {
        agent_errx("cannot build the report (out of memory or bad clock)");
        return AGENT_EXIT_NET;
    }
    if (printf("%s\n", json) < 0 || fflush(stdout) == EOF)
        rc = AGENT_EXIT_NET;
    free(json);
    return rc;
}

static int agent_once(const struct agent_conf *c)
{
    char msg[AGENT_MSG_MAX];
    long status, retry_after;
    enum agent_result r;

    r = agent_report(c, &status, &retry_after, msg, sizeof(msg));
    agent_errx("%s", msg);
    if (r == AGENT_SENT)
        return AGENT_EXIT_OK;
    return r == AGENT_REFUSED ? AGENT_EXIT_REFUSED : AGENT_EXIT_NET;
}

static void agent_on_signal(int sig)
{
    (void)sig;
    agent_stop = 1;
}

/* seconds * (0.9 .. 1.1), in milliseconds: reports of a fleet do not stay in step. */
static long long agent_jitter_ms(long seconds)
{
    double u = (double)random() / ((double)RAND_MAX + 1.0);

    return (long long)((double)seconds * 1000.0 * (0.9 + 0.2 * u));
}

/* Sleep with SIGTERM/SIGINT unblocked; a signal ends the sleep at once. */
static void agent_sleep_ms(long long ms, const sigset_t *unblocked)
{
    struct timespec ts;

    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    if (!agent_stop)
        ppoll(NULL, 0, &ts, unblocked);
}

static int agent_daemon(const struct agent_conf *c)
{
    char msg[AGENT_MSG_MAX];
    long status, retry_after, backoff;
    unsigned failures = 0;
    struct sigaction sa;
    sigset_t block, unblocked;
    enum agent_result r;
    long long delay;
    unsigned seed;

    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    srandom(seed);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (sigprocmask(SIG_BLOCK, &block, &unblocked) == -1)
        fatal("sigprocmask");
    sigdelset(&unblocked, SIGTERM);
    sigdelset(&unblocked, SIGINT);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = agent_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) == -1 || sigaction(SIGINT, &sa, NULL) == -1)
        fatal("sigaction");
    signal(SIGPIPE, SIG_IGN);

    log_info("reporting to %s every %ld s (+-10%%)", c->url, c->interval);
    while (!agent_stop) {
        r = agent_report(c, &status, &retry_after, msg, sizeof(msg));
        if (r == AGENT_STOPPED || agent_stop_requested())
            break;
        if (r == AGENT_SENT) {
            failures = 0;
            delay = agent_jitter_ms(c->interval);
            log_info("%s; next in %lld s", msg, delay / 1000);
        } else {
            failures++;
            backoff = c->interval < AGENT_BACKOFF_FIRST ? c->interval : AGENT_BACKOFF_FIRST;
            backoff <<= failures - 1 > 7 ? 7 : failures - 1;
            if (backoff > AGENT_BACKOFF_MAX)
                backoff = AGENT_BACKOFF_MAX;
            delay = agent_jitter_ms(backoff);
            if (retry_after * 1000LL > delay)
                delay = retry_after * 1000LL;
            if (delay > AGENT_BACKOFF_MAX * 1000LL)
                delay = AGENT_BACKOFF_MAX * 1000LL;
            log_warnx("%s; retry %u in %lld s", msg, failures, delay / 1000);
        }
        agent_sleep_ms(delay, &unblocked);
    }
    log_info("stopping");
    return AGENT_EXIT_OK;
}

int main(int argc, char **argv)
{
    struct agent_conf c;
    int rc;

    log_init("ztagent");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        agent_errx("cannot initialise libcurl");
        return AGENT_EXIT_NET;
    }
    rc = agent_conf_load(&c, argc, argv);
    if (rc == -1) {
        log_set_level(c.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
        if (c.mode == AGENT_MODE_PRINT)
            rc = agent_print(&c);
        else if (c.mode == AGENT_MODE_ONCE)
            rc = agent_once(&c);
        else
            rc = agent_daemon(&c);
    }
    agent_conf_reset(&c);
    curl_global_cleanup();
    return rc;
}
