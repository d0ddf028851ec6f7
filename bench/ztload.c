/*
 * ztload: HTTP/1.1 load client for benchmarking ztproxy against other
 * mutual-TLS reverse proxies. Unlike wrk it presents a client certificate.
 *
 * Each thread owns an epoll loop and a fixed set of connection slots; nothing
 * is shared between threads but a stop flag and a few atomic counters, and
 * per-thread statistics are merged once at the end.
 *
 * Modes:
 *   keepalive  one connection per slot, sequential requests on it
 *   newconn    connect, full handshake, one request, close; repeat
 *   resume     like newconn, offering the session (ticket) that the slot's
 *              previous connection received
 *   idle       connect, handshake, one request, then keep the connection open
 *              without traffic for --hold seconds (memory per connection)
 *
 * Latency is recorded in a log-linear histogram with microsecond resolution
 * and a relative error below 1/128. With --rate, requests are scheduled at
 * fixed times over all connections and latency is measured from the
 * scheduled time, so a stalled server is charged for the requests it
 * delayed (no coordinated omission). Without --rate, latency is measured
 * from the moment the request was sent (keepalive) or the connection was
 * started (newconn, resume: it includes connect and handshake).
 */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define NS_PER_US 1000ULL
#define NS_PER_MS 1000000ULL
#define NS_PER_S 1000000000ULL

#define RBUF_SIZE 16384         /* response head must fit in here */
#define REQ_MAX 8192            /* request head (with --header) */
#define MAX_PENDING_CONNECTS 64 /* per thread, idle mode ramp-up */
#define RECONNECT_BACKOFF_NS (20 * NS_PER_MS)
#define TICK_MS 20 /* how often the loop checks stop and timeouts */

/* ---------------------------------------------------------------------- */
/* Histogram: values in microseconds. Below 2^SUB_BITS every value has its
 * own bucket; above, each power of two is split into 2^(SUB_BITS-1) equal
 * buckets. Fixed memory, mergeable by addition. */

#define HIST_SUB_BITS 8
#define HIST_SUB_COUNT (1U << HIST_SUB_BITS) /* 256 */
#define HIST_HALF (HIST_SUB_COUNT / 2)       /* 128 */
#define HIST_MAX_EXP 40                      /* ~12.7 days in us */
#define HIST_BUCKETS (HIST_SUB_COUNT + (HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_HALF)

struct hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    double sum;
    uint64_t buckets[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    unsigned e, shift;

    if (v < HIST_SUB_COUNT)
        return (unsigned)v;
    e = 63U - (unsigned)__builtin_clzll(v);
    if (e > HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    shift = e - (HIST_SUB_BITS - 1);
    return HIST_SUB_COUNT + (e - HIST_SUB_BITS) * HIST_HALF + (unsigned)((v >> shift) - HIST_HALF);
}

/* Highest value that falls into bucket idx. */
static uint64_t hist_bucket_high(unsigned idx)
{
    unsigned e, shift, sub;

    if (idx < HIST_SUB_COUNT)
        return idx;
    e = HIST_SUB_BITS + (idx - HIST_SUB_COUNT) / HIST_HALF;
    sub = HIST_HALF + (idx - HIST_SUB_COUNT) % HIST_HALF;
    shift = e - (HIST_SUB_BITS - 1);
    return (((uint64_t)sub + 1) << shift) - 1;
}

static void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static void hist_record(struct hist *h, uint64_t us)
{
    h->buckets[hist_index(us)]++;
    h->count++;
    h->sum += (double)us;
    if (us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
}

static void hist_merge(struct hist *dst, const struct hist *src)
{
    unsigned i;

    for (i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

static uint64_t hist_percentile(const struct hist *h, double pct)
{
    uint64_t want, seen = 0, v;
    unsigned i;

    if (h->count == 0)
        return 0;
    want = (uint64_t)ceil(pct / 100.0 * (double)h->count);
    if (want < 1)
        want = 1;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            v = hist_bucket_high(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---------------------------------------------------------------------- */
/* HTTP/1.1 response parser: incremental, no allocation. */

enum resp_state {
    RESP_HEAD,
    RESP_BODY_LENGTH,
    RESP_BODY_EOF,
    RESP_CHUNK_SIZE,
    RESP_CHUNK_EXT,
    RESP_CHUNK_SIZE_LF,
    RESP_CHUNK_DATA,
    RESP_CHUNK_DATA_CR,
    RESP_CHUNK_DATA_LF,
    RESP_TRAILER_START,
    RESP_TRAILER_LINE,
    RESP_TRAILER_LF,
    RESP_DONE,
};

struct resp {
    enum resp_state state;
    int status;
    bool conn_close;
    bool head_request;
    uint64_t remaining; /* body bytes or chunk bytes left */
    bool chunk_digits;
};

enum parse_result {
    PARSE_MORE = 0,
    PARSE_DONE = 1,
    PARSE_ERROR = -1,
};

static void resp_reset(struct resp *r, bool head_request)
{
    memset(r, 0, sizeof(*r));
    r->state = RESP_HEAD;
    r->head_request = head_request;
}

static bool header_is(const char *line, size_t len, const char *name, const char **val,
                      size_t *vlen)
{
    size_t n = strlen(name);

    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return false;
    line += n + 1;
    len -= n + 1;
    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    *val = line;
    *vlen = len;
    return true;
}

static bool token_in_list(const char *val, size_t vlen, const char *tok)
{
    size_t n = strlen(tok), i;

    for (i = 0; i + n <= vlen; i++) {
        if (strncasecmp(val + i, tok, n) == 0 &&
            (i == 0 || val[i - 1] == ',' || val[i - 1] == ' ' || val[i - 1] == '\t') &&
            (i + n == vlen || val[i + n] == ',' || val[i + n] == ' ' || val[i + n] == ';'))
            return true;
    }
    return false;
}

/*
 * Parse a complete response head of len bytes (ending in CRLFCRLF) and set up
 * body parsing. Returns PARSE_MORE (body follows), PARSE_DONE (no body) or
 * PARSE_ERROR.
 */
static enum parse_result resp_parse_head(struct resp *r, const char *p, size_t len)
{
    const char *end = p + len, *line, *eol, *val;
    size_t vlen;
    bool have_length = false, chunked = false;
    uint64_t length = 0;
    int minor;

    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return PARSE_ERROR;
    minor = p[7] - '0';
    if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return PARSE_ERROR;
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    r->conn_close = (minor == 0);

    eol = memchr(p, '\n', len);
    if (eol == NULL)
        return PARSE_ERROR;
    for (line = eol + 1; line < end; line = eol + 1) {
        size_t llen;

        eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            return PARSE_ERROR;
        llen = (size_t)(eol - line);
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        if (llen == 0)
            break;
        if (header_is(line, llen, "content-length", &val, &vlen)) {
            size_t i;

            if (vlen == 0 || vlen > 18)
                return PARSE_ERROR;
            length = 0;
            for (i = 0; i < vlen; i++) {
                if (val[i] < '0' || val[i] > '9')
                    return PARSE_ERROR;
                length = length * 10 + (uint64_t)(val[i] - '0');
            }
            have_length = true;
        } else if (header_is(line, llen, "transfer-encoding", &val, &vlen)) {
            if (token_in_list(val, vlen, "chunked"))
                chunked = true;
        } else if (header_is(line, llen, "connection", &val, &vlen)) {
            if (token_in_list(val, vlen, "close"))
                r->conn_close = true;
            else if (token_in_list(val, vlen, "keep-alive"))
                r->conn_close = false;
        }
    }

    if (r->status < 200) /* 1xx: not expected, we never send Expect */
        return PARSE_ERROR;
    if (r->head_request || r->status == 204 || r->status == 304) {
        r->state = RESP_DONE;
        return PARSE_DONE;
    }
    if (chunked) {
        r->state = RESP_CHUNK_SIZE;
        r->remaining = 0;
        r->chunk_digits = false;
        return PARSE_MORE;
    }
    if (have_length) {
        if (length == 0) {
            r->state = RESP_DONE;
            return PARSE_DONE;
        }
        r->state = RESP_BODY_LENGTH;
        r->remaining = length;
        return PARSE_MORE;
    }
    r->state = RESP_BODY_EOF;
    r->conn_close = true;
    return PARSE_MORE;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Feed body bytes. *used is set to the number consumed. Returns PARSE_DONE
 * when the response is complete (bytes after it are left unconsumed).
 */
static enum parse_result resp_parse_body(struct resp *r, const char *p, size_t len, size_t *used)
{
    size_t i = 0;

    while (i < len) {
        char c = p[i];
        int h;

        switch (r->state) {
        case RESP_BODY_LENGTH: {
            size_t n = len - i;

            if (n > r->remaining)
                n = (size_t)r->remaining;
            r->remaining -= n;
            i += n;
            if (r->remaining == 0) {
                r->state = RESP_DONE;
                *used = i;
                return PARSE_DONE;
            }
            break;
        }
        case RESP_BODY_EOF:
            i = len;
            break;
        case RESP_CHUNK_SIZE:
            h = hexval(c);
            if (h >= 0) {
                if (r->remaining > (UINT64_MAX >> 8))
                    return PARSE_ERROR;
                r->remaining = (r->remaining << 4) | (uint64_t)h;
                r->chunk_digits = true;
            } else if (!r->chunk_digits) {
                return PARSE_ERROR;
            } else if (c == '\r') {
                r->state = RESP_CHUNK_SIZE_LF;
            } else if (c == ';' || c == ' ' || c == '\t') {
                r->state = RESP_CHUNK_EXT;
            } else if (c == '\n') {
                r->state = r->remaining ? RESP_CHUNK_DATA : RESP_TRAILER_START;
            } else {
                return PARSE_ERROR;
            }
            i++;
            break;
        case RESP_CHUNK_EXT:
            if (c == '\r')
                r->state = RESP_CHUNK_SIZE_LF;
            else if (c == '\n')
                r->state = r->remaining ? RESP_CHUNK_DATA : RESP_TRAILER_START;
            i++;
            break;
        case RESP_CHUNK_SIZE_LF:
            if (c != '\n')
                return PARSE_ERROR;
            r->state = r->remaining ? RESP_CHUNK_DATA : RESP_TRAILER_START;
            i++;
            break;
        case RESP_CHUNK_DATA: {
            size_t n = len - i;

            if (n > r->remaining)
                n = (size_t)r->remaining;
            r->remaining -= n;
            i += n;
            if (r->remaining == 0)
                r->state = RESP_CHUNK_DATA_CR;
            break;
        }
        case RESP_CHUNK_DATA_CR:
            if (c == '\r')
                r->state = RESP_CHUNK_DATA_LF;
            else if (c == '\n')
                goto next_chunk;
            else
                return PARSE_ERROR;
            i++;
            break;
        case RESP_CHUNK_DATA_LF:
            if (c != '\n')
                return PARSE_ERROR;
        next_chunk:
            r->state = RESP_CHUNK_SIZE;
            r->remaining = 0;
            r->chunk_digits = false;
            i++;
            break;
        case RESP_TRAILER_START:
            if (c == '\r') {
                r->state = RESP_TRAILER_LF;
            } else if (c == '\n') {
                r->state = RESP_DONE;
                *used = i + 1;
                return PARSE_DONE;
            } else {
                r->state = RESP_TRAILER_LINE;
            }
            i++;
            break;
        case RESP_TRAILER_LINE:
            if (c == '\n')
                r->state = RESP_TRAILER_START;
            i++;
            break;
        case RESP_TRAILER_LF:
            if (c != '\n')
                return PARSE_ERROR;
            r->state = RESP_DONE;
            *used = i + 1;
            return PARSE_DONE;
        case RESP_HEAD:
        case RESP_DONE:
            return PARSE_ERROR;
        }
    }
    *used = i;
    return PARSE_MORE;
}

/* ---------------------------------------------------------------------- */
/* Options */

enum mode {
    MODE_KEEPALIVE,
    MODE_NEWCONN,
    MODE_RESUME,
    MODE_IDLE,
};

static const char *const mode_names[] = {"keepalive", "newconn", "resume", "idle"};

struct opts {
    bool tls;
    char host[256]; /* Host header */
    char sni[256];  /* empty: use host unless it is an IP literal */
    char path[1024];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char addr_text[300];
    const char *cert;
    const char *key;
    const char *ca;
    bool insecure;
    int tls_max; /* 0, TLS1_2_VERSION or TLS1_3_VERSION */
    unsigned conns;
    unsigned threads;
    double duration;
    double warmup;
    double rate;
    double timeout;
    double hold;
    double ramp;
    const char *ready_file;
    enum mode mode;
    bool json;
    const char *method;
    const char *headers[16]; /* --header "Name: value", added to every request */
    unsigned nheaders;
};

static struct opts o;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("ztload: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* --header "Name: value": a token, a colon, a value of visible characters,
 * spaces and tabs (no CR, LF or other controls), at most 4 KiB; Host and
 * the framing headers are ztload's own. */
static void check_header(const char *h)
{
    const char *colon = strchr(h, ':');
    size_t i, nlen;

    if (colon == NULL || colon == h)
        die("--header \"%.40s\": expected \"Name: value\"", h);
    nlen = (size_t)(colon - h);
    for (i = 0; i < nlen; i++)
        if (!isalnum((unsigned char)h[i]) && strchr("!#$%&'*+-.^_`|~", h[i]) == NULL)
            die("--header \"%.40s\": invalid character in the name at %zu", h, i);
    for (i = nlen + 1; h[i] != '\0'; i++)
        if (((unsigned char)h[i] < 0x20 && h[i] != '\t') || h[i] == 0x7f)
            die("--header \"%.40s\": control character in the value at %zu", h, i);
    if (i > 4096)
        die("--header: longer than 4096 bytes");
    if ((nlen == 4 && strncasecmp(h, "host", 4) == 0) ||
        (nlen == 14 && strncasecmp(h, "content-length", 14) == 0) ||
        (nlen == 17 && strncasecmp(h, "transfer-encoding", 17) == 0) ||
        (nlen == 10 && strncasecmp(h, "connection", 10) == 0))
        die("--header: %.*s is set by ztload", (int)nlen, h);
}

static void die_ssl(const char *what)
{
    fprintf(stderr, "ztload: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void copy_str(char *dst, size_t size, const char *src, size_t len)
{
    if (len >= size)
        die("value too long: %.40s...", src);
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static double parse_double(const char *s, const char *name, double min, double max)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
        die("%s: expected a number in [%g, %g], got '%s'", name, min, max, s);
    return v;
}

static unsigned parse_uint(const char *s, const char *name, unsigned long min, unsigned long max)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        die("%s: expected an integer in [%lu, %lu], got '%s'", name, min, max, s);
    return (unsigned)v;
}

/* Resolve "host:port" or "[v6]:port" into o.addr. */
static void resolve(const char *hostport, const char *default_port)
{
    char host[256], port[16];
    const char *colon;
    struct addrinfo hints, *res = NULL;
    int rc;

    if (hostport[0] == '[') {
        const char *rb = strchr(hostport, ']');

        if (rb == NULL)
            die("bad address '%s'", hostport);
        copy_str(host, sizeof(host), hostport + 1, (size_t)(rb - hostport - 1));
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = strrchr(hostport, ':');
        copy_str(host, sizeof(host), hostport,
                 colon ? (size_t)(colon - hostport) : strlen(hostport));
    }
    if (colon != NULL)
        copy_str(port, sizeof(port), colon + 1, strlen(colon + 1));
    else
        copy_str(port, sizeof(port), default_port, strlen(default_port));

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        die("cannot resolve '%s': %s", hostport, gai_strerror(rc));
    memcpy(&o.addr, res->ai_addr, res->ai_addrlen);
    o.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    copy_str(o.addr_text, sizeof(o.addr_text), hostport, strlen(hostport));
}

static void parse_url(const char *url, bool set_addr)
{
    const char *rest, *slash;
    char hostport[300];

    if (strncmp(url, "https://", 8) == 0) {
        o.tls = true;
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        o.tls = false;
        rest = url + 7;
    } else {
        die("--url must start with http:// or https://");
    }
    slash = strchr(rest, '/');
    copy_str(hostport, sizeof(hostport), rest, slash ? (size_t)(slash - rest) : strlen(rest));
    if (slash != NULL)
        copy_str(o.path, sizeof(o.path), slash, strlen(slash));
    else
        copy_str(o.path, sizeof(o.path), "/", 1);
    if (o.host[0] == '\0') {
        /* Host header: the authority without a default port is fine as is. */
        copy_str(o.host, sizeof(o.host), hostport, strlen(hostport));
    }
    if (set_addr)
        resolve(hostport, o.tls ? "443" : "80");
}

static void usage(FILE *f)
{
    fputs("usage: ztload --url http[s]://HOST[:PORT]/PATH [options]\n"
          "       ztload --connect IP:PORT --host NAME [--path /P] [--plain] [options]\n"
          "  --cert FILE --key FILE   client certificate and key (PEM)\n"
          "  --ca FILE                verify the server against this CA\n"
          "  --insecure               do not verify the server\n"
          "  --sni NAME               TLS server name (default: the host)\n"
          "  --tls-max 1.2|1.3        highest TLS version offered\n"
          "  -c N                     connections (default 16)\n"
          "  -t N                     threads (default 1)\n"
          "  -d SECONDS               measured duration (default 10)\n"
          "  --warmup SECONDS         run before measuring (default 1)\n"
          "  --mode keepalive|newconn|resume|idle\n"
          "  --rate R                 fixed total request rate (latency from schedule)\n"
          "  --timeout SECONDS        per request (default 10)\n"
          "  --hold SECONDS           idle mode: keep connections open this long\n"
          "  --ready-file PATH        idle mode: created when all connections are idle\n"
          "  --ramp-timeout SECONDS   idle mode: give up opening connections after this\n"
          "  --method GET|HEAD        request method (default GET)\n"
          "  --header 'Name: value'   add a request header (repeatable, e.g. a Cookie)\n"
          "  --json                   print one JSON object\n",
          f);
}

static void parse_args(int argc, char **argv)
{
    enum {
        OPT_URL = 256,
        OPT_CONNECT,
        OPT_HOST,
        OPT_PATH,
        OPT_CERT,
        OPT_KEY,
        OPT_CA,
        OPT_INSECURE,
        OPT_SNI,
        OPT_WARMUP,
        OPT_MODE,
        OPT_RATE,
        OPT_JSON,
        OPT_TIMEOUT,
        OPT_HOLD,
        OPT_READY,
        OPT_PLAIN,
        OPT_TLSMAX,
        OPT_METHOD,
        OPT_RAMP,
        OPT_HEADER,
    };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"host", required_argument, NULL, OPT_HOST},
        {"path", required_argument, NULL, OPT_PATH},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"ca", required_argument, NULL, OPT_CA},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"sni", required_argument, NULL, OPT_SNI},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"mode", required_argument, NULL, OPT_MODE},
        {"rate", required_argument, NULL, OPT_RATE},
        {"json", no_argument, NULL, OPT_JSON},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"ramp-timeout", required_argument, NULL, OPT_RAMP},
        {"ready-file", required_argument, NULL, OPT_READY},
        {"plain", no_argument, NULL, OPT_PLAIN},
        {"tls-max", required_argument, NULL, OPT_TLSMAX},
        {"method", required_argument, NULL, OPT_METHOD},
        {"header", required_argument, NULL, OPT_HEADER},
        {"connections", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL, *connect_to = NULL, *path = NULL;
    bool plain = false;
    int ch;
    unsigned i;

    o.conns = 16;
    o.threads = 1;
    o.duration = 10;
    o.warmup = 1;
    o.timeout = 10;
    o.hold = 10;
    o.ramp = 300;
    o.mode = MODE_KEEPALIVE;
    o.method = "GET";

    while ((ch = getopt_long(argc, argv, "c:t:d:h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_URL:
            url = optarg;
            break;
        case OPT_CONNECT:
            connect_to = optarg;
            break;
        case OPT_HOST:
            copy_str(o.host, sizeof(o.host), optarg, strlen(optarg));
            break;
        case OPT_PATH:
            path = optarg;
            break;
        case OPT_CERT:
            o.cert = optarg;
            break;
        case OPT_KEY:
            o.key = optarg;
            break;
        case OPT_CA:
            o.ca = optarg;
            break;
        case OPT_INSECURE:
            o.insecure = true;
            break;
        case OPT_SNI:
            copy_str(o.sni, sizeof(o.sni), optarg, strlen(optarg));
            break;
        case OPT_WARMUP:
            o.warmup = parse_double(optarg, "--warmup", 0, 3600);
            break;
        case OPT_RATE:
            o.rate = parse_double(optarg, "--rate", 0, 1e8);
            break;
        case OPT_JSON:
            o.json = true;
            break;
        case OPT_TIMEOUT:
            o.timeout = parse_double(optarg, "--timeout", 0.001, 3600);
            break;
        case OPT_HOLD:
            o.hold = parse_double(optarg, "--hold", 0, 86400);
            break;
        case OPT_RAMP:
            o.ramp = parse_double(optarg, "--ramp-timeout", 1, 86400);
            break;
        case OPT_READY:
            o.ready_file = optarg;
            break;
        case OPT_PLAIN:
            plain = true;
            break;
        case OPT_METHOD:
            if (strcmp(optarg, "GET") != 0 && strcmp(optarg, "HEAD") != 0)
                die("--method: GET or HEAD");
            o.method = optarg;
            break;
        case OPT_HEADER:
            check_header(optarg);
            if (o.nheaders == sizeof(o.headers) / sizeof(o.headers[0]))
                die("--header: at most %zu", sizeof(o.headers) / sizeof(o.headers[0]));
            o.headers[o.nheaders++] = optarg;
            break;
        case OPT_TLSMAX:
            if (strcmp(optarg, "1.2") == 0)
                o.tls_max = TLS1_2_VERSION;
            else if (strcmp(optarg, "1.3") == 0)
                o.tls_max = TLS1_3_VERSION;
            else
                die("--tls-max: 1.2 or 1.3");
            break;
        case OPT_MODE:
            for (i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
                if (strcmp(optarg, mode_names[i]) == 0)
                    break;
            }
            if (i == sizeof(mode_names) / sizeof(mode_names[0]))
                die("--mode: keepalive, newconn, resume or idle");
            o.mode = (enum mode)i;
            break;
        case 'c':
            o.conns = parse_uint(optarg, "-c", 1, 1000000);
            break;
        case 't':
            o.threads = parse_uint(optarg, "-t", 1, 256);
            break;
        case 'd':
            o.duration = parse_double(optarg, "-d", 0.001, 86400);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc)
        die("unexpected argument '%s'", argv[optind]);
    if ((url == NULL) == (connect_to == NULL))
        die("give exactly one of --url and --connect");
    if (url != NULL) {
        parse_url(url, true);
    } else {
        o.tls = !plain;
        resolve(connect_to, "443");
        if (o.host[0] == '\0')
            copy_str(o.host, sizeof(o.host), connect_to, strlen(connect_to));
        copy_str(o.path, sizeof(o.path), "/", 1);
    }
    if (path != NULL) {
        if (path[0] != '/')
            die("--path must start with /");
        copy_str(o.path, sizeof(o.path), path, strlen(path));
    }
    if (o.threads > o.conns)
        o.threads = o.conns;
    if (o.tls) {
        if ((o.cert == NULL) != (o.key == NULL))
            die("--cert and --key go together");
        if (o.ca == NULL && !o.insecure)
            die("give --ca to verify the server, or --insecure");
    } else if (o.mode == MODE_RESUME) {
        die("--mode resume needs https");
    }
    if (o.rate > 0 && o.mode == MODE_IDLE)
        die("--rate makes no sense with --mode idle");
    if (o.sni[0] == '\0') {
        struct in6_addr a6;
        char h[256];
        const char *colon = strrchr(o.host, ':');

        /* The Host header may carry a port; SNI never does, nor IP literals. */
        copy_str(h, sizeof(h), o.host,
                 (colon && o.host[0] != '[') ? (size_t)(colon - o.host) : strlen(o.host));
        if (inet_pton(AF_INET, h, &a6) != 1 && inet_pton(AF_INET6, h, &a6) != 1 && h[0] != '[')
            copy_str(o.sni, sizeof(o.sni), h, strlen(h));
    }
}

/* ---------------------------------------------------------------------- */
/* Connections and threads */

enum conn_state {
    ST_NONE,       /* no socket */
    ST_BACKOFF,    /* waiting before reconnecting */
    ST_CONNECTING, /* TCP connect in progress */
    ST_HANDSHAKE,  /* TLS handshake in progress */
    ST_SEND,       /* writing the request */
    ST_RECV,       /* reading the response */
    ST_READY,      /* keep-alive connection waiting for the next scheduled request */
    ST_HOLD,       /* idle mode: connection kept open without traffic */
    ST_FAILED,     /* idle mode: gave up on this slot */
};

enum err_kind {
    ERR_CONNECT,
    ERR_TLS,
    ERR_IO,
    ERR_PARSE,
    ERR_TIMEOUT,
    ERR_CLOSED, /* peer closed a keep-alive connection between requests */
    ERR_COUNT,
};

static const char *const err_names[ERR_COUNT] = {"connect", "tls",     "io",
                                                 "parse",   "timeout", "closed_idle"};

struct stats {
    uint64_t requests;     /* completed responses in the window */
    uint64_t requests_all; /* completed responses, warm-up included */
    uint64_t status[6];    /* by class: [2] = 2xx ... */
    uint64_t errors[ERR_COUNT];
    uint64_t handshakes; /* completed in the window */
    uint64_t resumed;
    uint64_t connects;    /* TCP connections started (whole run) */
    uint64_t late;        /* rate mode: requests not sent by the end of the run */
    uint64_t idle_closed; /* keep-alive connections the server closed while they
                           * waited for their next request (not an error: see
                           * check_idle_conn) */
    struct hist lat;
};

struct thread;

struct conn {
    struct thread *t;
    int fd;
    enum conn_state state;
    SSL *ssl;
    SSL_SESSION *sess;    /* resume mode: offered on the next connection */
    uint64_t started_ns;  /* latency origin of the current request */
    uint64_t deadline_ns; /* timeout of the current step */
    uint64_t backoff_until;
    size_t sent;
    size_t rlen;
    struct resp resp;
    bool requested; /* a request is outstanding on this connection */
    bool scheduled; /* rate mode: started_ns is a scheduled time */
    bool pending;   /* idle mode: counted in thread.pending_connects */
    unsigned requests_on_conn;
    char rbuf[RBUF_SIZE];
};

struct thread {
    unsigned idx;
    pthread_t tid;
    int epfd;
    int tfd; /* rate mode pacing timer */
    struct conn *conns;
    unsigned nconns;
    unsigned pending_connects;
    /* rate mode */
    unsigned next_slot; /* where dispatch_due looks for a free slot first */
    uint64_t next_sched_ns;
    uint64_t interval_ns;
    struct stats st;
};

static SSL_CTX *ssl_ctx;
static char request[REQ_MAX];
static size_t request_len;
static uint64_t t_start_ns, t_measure_ns, t_end_ns;
static atomic_bool stop_flag;
static atomic_bool go_flag;
static atomic_uint threads_ready;
static atomic_uint idle_established, idle_failed, idle_dropped;
static int ssl_slot_index = -1;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static bool in_window(uint64_t t)
{
    /* Idle mode counts everything from the start; its end is decided at run time. */
    return o.mode == MODE_IDLE || (t >= t_measure_ns && t <= t_end_ns);
}

static void conn_start(struct conn *c, uint64_t now);
static void conn_drive(struct conn *c, uint64_t now);

static void count_error(struct conn *c, enum err_kind k, uint64_t now)
{
    if (in_window(now))
        c->t->st.errors[k]++;
}

static void conn_unpend(struct conn *c)
{
    if (c->pending) {
        c->pending = false;
        c->t->pending_connects--;
    }
}

/* Close the socket; the caller decides what the slot does next. */
static void conn_close(struct conn *c, bool clean)
{
    if (c->ssl != NULL) {
        if (clean) {
            /* Send close_notify like a polite client; do not wait for the reply. */
            SSL_shutdown(c->ssl);
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd != -1) {
        close(c->fd); /* also removes it from epoll */
        c->fd = -1;
    }
    conn_unpend(c);
    c->state = ST_NONE;
    c->requested = false;
}

static void conn_fail(struct conn *c, enum err_kind k, uint64_t now)
{
    count_error(c, k, now);
    conn_close(c, false);
    if (o.mode == MODE_IDLE) {
        c->state = ST_FAILED;
        atomic_fetch_add(&idle_failed, 1);
        return;
    }
    if (o.mode == MODE_RESUME && c->sess != NULL && k == ERR_TLS) {
        /* A bad session must not poison the slot forever. */
        SSL_SESSION_free(c->sess);
        c->sess = NULL;
    }
    c->state = ST_BACKOFF;
    c->backoff_until = now + RECONNECT_BACKOFF_NS;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct conn *c = SSL_get_ex_data(ssl, ssl_slot_index);

    if (c == NULL || o.mode != MODE_RESUME)
        return 0;
    SSL_SESSION_free(c->sess);
    c->sess = sess;
    return 1; /* we keep the reference */
}

static void setup_ssl_ctx(void)
{
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (ssl_ctx == NULL)
        die_ssl("SSL_CTX_new failed");
    if (SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1)
        die_ssl("cannot set minimum TLS version");
    if (o.tls_max != 0 && SSL_CTX_set_max_proto_version(ssl_ctx, o.tls_max) != 1)
        die_ssl("cannot set maximum TLS version");
    if (o.cert != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ssl_ctx, o.cert) != 1)
            die_ssl("cannot load --cert");
        if (SSL_CTX_use_PrivateKey_file(ssl_ctx, o.key, SSL_FILETYPE_PEM) != 1)
            die_ssl("cannot load --key");
        if (SSL_CTX_check_private_key(ssl_ctx) != 1)
            die_ssl("--key does not match --cert");
    }
    if (o.insecure) {
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
    } else {
        if (SSL_CTX_load_verify_locations(ssl_ctx, o.ca, NULL) != 1)
            die_ssl("cannot load --ca");
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    if (SSL_CTX_set_alpn_protos(ssl_ctx, (const unsigned char *)"\x08http/1.1", 9) != 0)
        die_ssl("cannot set ALPN");
    SSL_CTX_set_session_cache_mode(ssl_ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ssl_ctx, new_session_cb);
    ssl_slot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (ssl_slot_index < 0)
        die_ssl("SSL_get_ex_new_index failed");
}

static void conn_start(struct conn *c, uint64_t now)
{
    struct epoll_event ev;
    int one = 1, rc;

    c->fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1) {
        fprintf(stderr, "ztload: socket: %s\n", strerror(errno));
        conn_fail(c, ERR_CONNECT, now);
        return;
    }
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->t->st.connects++;
    c->rlen = 0;
    c->sent = 0;
    c->requests_on_conn = 0;
    c->deadline_ns = now + (uint64_t)(o.timeout * (double)NS_PER_S);
    if (!c->scheduled && !c->requested)
        c->started_ns = now;
    if (o.mode == MODE_IDLE) {
        c->pending = true;
        c->t->pending_connects++;
    }
    c->state = ST_CONNECTING;

    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(c->t->epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
        fprintf(stderr, "ztload: epoll_ctl: %s\n", strerror(errno));
        conn_fail(c, ERR_CONNECT, now);
        return;
    }
    rc = connect(c->fd, (const struct sockaddr *)&o.addr, o.addrlen);
    if (rc == -1 && errno != EINPROGRESS) {
        static atomic_bool warned;

        if (!atomic_exchange(&warned, true))
            fprintf(stderr, "ztload: connect %s: %s\n", o.addr_text, strerror(errno));
        conn_fail(c, ERR_CONNECT, now);
        return;
    }
    /* Completion (or immediate success) is reported by EPOLLOUT. */
}

/* TCP is up: start TLS or go straight to the request. */
/* Connection usable: send now, or wait for the schedule (rate mode). */
static void conn_established(struct conn *c)
{
    c->state = (o.rate > 0 && !c->requested) ? ST_READY : ST_SEND;
}

static void conn_connected(struct conn *c, uint64_t now)
{
    if (!o.tls) {
        conn_established(c);
        return;
    }
    c->ssl = SSL_new(ssl_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_ex_data(c->ssl, ssl_slot_index, c) != 1) {
        conn_fail(c, ERR_TLS, now);
        return;
    }
    if (o.sni[0] != '\0') {
        if (SSL_set_tlsext_host_name(c->ssl, o.sni) != 1) {
            conn_fail(c, ERR_TLS, now);
            return;
        }
        if (!o.insecure && SSL_set1_host(c->ssl, o.sni) != 1) {
            conn_fail(c, ERR_TLS, now);
            return;
        }
    }
    if (o.mode == MODE_RESUME && c->sess != NULL)
        SSL_set_session(c->ssl, c->sess);
    SSL_set_connect_state(c->ssl);
    c->state = ST_HANDSHAKE;
}

static void tls_error_once(SSL *ssl, int ret, const char *what)
{
    static atomic_uint printed;
    unsigned long e;
    char buf[256];

    if (atomic_fetch_add(&printed, 1) >= 3) {
        ERR_clear_error();
        return;
    }
    e = ERR_peek_last_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
    } else {
        snprintf(buf, sizeof(buf), "SSL_get_error=%d errno=%s", SSL_get_error(ssl, ret),
                 strerror(errno));
    }
    fprintf(stderr, "ztload: %s: %s\n", what, buf);
    if (ssl != NULL && SSL_get_verify_result(ssl) != X509_V_OK)
        fprintf(stderr, "ztload: server certificate: %s\n",
                X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    ERR_clear_error();
}

/* Returns 1 when done, 0 when it must wait, -1 on failure. */
static int step_handshake(struct conn *c, uint64_t now)
{
    int rc = SSL_do_handshake(c->ssl);

    if (rc == 1) {
        if (in_window(now)) {
            c->t->st.handshakes++;
            if (SSL_session_reused(c->ssl))
                c->t->st.resumed++;
        }
        conn_established(c);
        return 1;
    }
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    default:
        tls_error_once(c->ssl, rc, "TLS handshake");
        conn_fail(c, ERR_TLS, now);
        return -1;
    }
}

static int io_write(struct conn *c, const char *p, size_t n, size_t *written)
{
    if (c->ssl != NULL) {
        int rc = SSL_write_ex(c->ssl, p, n, written);

        if (rc == 1)
            return 1;
        switch (SSL_get_error(c->ssl, rc)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return 0;
        default:
            ERR_clear_error();
            return -1;
        }
    } else {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);

        if (w >= 0) {
            *written = (size_t)w;
            return 1;
        }
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
}

/* 1: got bytes, 0: would block, -1: error, -2: clean EOF */
static int io_read(struct conn *c, char *p, size_t n, size_t *got)
{
    if (c->ssl != NULL) {
        int rc;

        errno = 0;
        rc = SSL_read_ex(c->ssl, p, n, got);

        if (rc == 1)
            return 1;
        switch (SSL_get_error(c->ssl, rc)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return 0;
        case SSL_ERROR_ZERO_RETURN:
            return -2;
        case SSL_ERROR_SYSCALL:
            ERR_clear_error();
            /* EOF without close_notify: most servers do this. */
            return errno == 0 ? -2 : -1;
        default:
            ERR_clear_error();
            return -1;
        }
    } else {
        ssize_t r = recv(c->fd, p, n, 0);

        if (r > 0) {
            *got = (size_t)r;
            return 1;
        }
        if (r == 0)
            return -2;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
}

static int step_send(struct conn *c, uint64_t now)
{
    if (c->sent == 0) {
        resp_reset(&c->resp, o.method[0] == 'H');
        c->rlen = 0;
        c->requested = true;
        if (!c->scheduled && (o.mode == MODE_KEEPALIVE ? true : c->requests_on_conn > 0))
            c->started_ns = now;
        c->deadline_ns = now + (uint64_t)(o.timeout * (double)NS_PER_S);
    }
    while (c->sent < request_len) {
        size_t w = 0;
        int rc = io_write(c, request + c->sent, request_len - c->sent, &w);

        if (rc == 0)
            return 0;
        if (rc < 0) {
            conn_fail(c, ERR_IO, now);
            return -1;
        }
        c->sent += w;
    }
    c->sent = 0;
    c->state = ST_RECV;
    return 1;
}

/* Response complete: record it and decide what the connection does next. */
static void response_done(struct conn *c, uint64_t now)
{
    struct stats *st = &c->t->st;
    bool close_it = c->resp.conn_close;

    c->requested = false;
    c->requests_on_conn++;
    st->requests_all++;
    if (in_window(now)) {
        uint64_t origin = c->started_ns;

        st->requests++;
        st->status[c->resp.status / 100]++;
        hist_record(&st->lat, now > origin ? (now - origin) / NS_PER_US : 0);
    }
    c->scheduled = false;

    if (o.mode == MODE_IDLE) {
        if (close_it) {
            conn_fail(c, ERR_CLOSED, now);
            return;
        }
        conn_unpend(c);
        c->state = ST_HOLD;
        atomic_fetch_add(&idle_established, 1);
        return;
    }
    if (o.mode != MODE_KEEPALIVE || close_it) {
        conn_close(c, true);
        if (o.rate > 0 && o.mode == MODE_KEEPALIVE) {
            c->state = ST_NONE; /* reconnect when the next request is due */
            return;
        }
        if (o.rate > 0) {
            c->state = ST_READY; /* newconn/resume paced: connect on dispatch */
            return;
        }
        conn_start(c, now);
        return;
    }
    c->state = o.rate > 0 ? ST_READY : ST_SEND;
}

static int step_recv(struct conn *c, uint64_t now)
{
    for (;;) {
        size_t got = 0, used = 0;
        int rc;
        enum parse_result pr;

        if (c->rlen == sizeof(c->rbuf)) {
            /* Body bytes are consumed as they arrive, so only an oversized head ends up here. */
            conn_fail(c, ERR_PARSE, now);
            return -1;
        }
        rc = io_read(c, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, &got);
        if (rc == 0)
            return 0;
        if (rc == -2 && c->resp.state == RESP_BODY_EOF) {
            c->resp.state = RESP_DONE;
            response_done(c, now);
            return 1;
        }
        if (rc < 0) {
            /* A keep-alive connection closed before any byte of a new response is
             * a server-side idle close; the request is retried on a new connection. */
            conn_fail(c,
                      (c->resp.state == RESP_HEAD && c->rlen == 0 && c->requests_on_conn > 0)
                          ? ERR_CLOSED
                          : ERR_IO,
                      now);
            return -1;
        }
        c->rlen += got;

        if (c->resp.state == RESP_HEAD) {
            size_t from = c->rlen - got >= 3 ? c->rlen - got - 3 : 0;
            const char *end = memmem(c->rbuf + from, c->rlen - from, "\r\n\r\n", 4);
            size_t hlen;

            if (end == NULL)
                continue;
            hlen = (size_t)(end - c->rbuf) + 4;
            pr = resp_parse_head(&c->resp, c->rbuf, hlen);
            if (pr == PARSE_ERROR) {
                conn_fail(c, ERR_PARSE, now);
                return -1;
            }
            memmove(c->rbuf, c->rbuf + hlen, c->rlen - hlen);
            c->rlen -= hlen;
            if (pr == PARSE_DONE) {
                if (c->rlen != 0) {
                    conn_fail(c, ERR_PARSE, now);
                    return -1;
                }
                response_done(c, now);
                return 1;
            }
        }
        if (c->rlen == 0)
            continue;
        pr = resp_parse_body(&c->resp, c->rbuf, c->rlen, &used);
        if (pr == PARSE_ERROR) {
            conn_fail(c, ERR_PARSE, now);
            return -1;
        }
        if (pr == PARSE_DONE) {
            if (used != c->rlen) {
                /* Bytes after the response: we never pipeline, so this is a bug. */
                conn_fail(c, ERR_PARSE, now);
                return -1;
            }
            c->rlen = 0;
            response_done(c, now);
            return 1;
        }
        c->rlen = 0;
    }
}

/* Peek at a connection that should be silent (ST_READY / ST_HOLD).
 *
 * A keep-alive connection that the server closes while it waits here has
 * lost no request: the server's idle timeout ended it before we had
 * anything to send, and the next request due opens a new connection. That
 * is counted as idle_closed, not as an error. ERR_CLOSED is for the race a
 * client does pay for: a request written on a connection the server had
 * already closed (step_recv). Bytes nobody asked for are a protocol error. */
static void check_idle_conn(struct conn *c, uint64_t now)
{
    char b[512];
    size_t got = 0;
    int rc = io_read(c, b, sizeof(b), &got);

    if (rc == 0)
        return;
    if (o.mode == MODE_IDLE) {
        if (rc < 0 && !atomic_load(&stop_flag))
            atomic_fetch_add(&idle_dropped, 1);
        if (rc < 0) {
            conn_close(c, false);
            c->state = ST_FAILED;
        }
        return;
    }
    /* Closed or unexpected bytes: drop it and reconnect on the next dispatch. */
    if (in_window(now)) {
        if (rc < 0)
            c->t->st.idle_closed++;
        else
            c->t->st.errors[ERR_PARSE]++;
    }
    conn_close(c, false);
    c->state = ST_NONE;
}

/* Run the state machine until it must wait. */
static void conn_drive(struct conn *c, uint64_t now)
{
    for (;;) {
        switch (c->state) {
        case ST_CONNECTING: {
            int err = 0;
            socklen_t len = sizeof(err);

            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
                err = errno;
            if (err == EINPROGRESS || err == EALREADY)
                return;
            if (err != 0) {
                static atomic_bool warned;

                if (!atomic_exchange(&warned, true))
                    fprintf(stderr, "ztload: connect %s: %s\n", o.addr_text, strerror(err));
                conn_fail(c, ERR_CONNECT, now);
                return;
            }
            /* getsockopt does not tell "still connecting" on Linux; EPOLLOUT does.
             * We only get here from an event or right after connect(), so check
             * that the socket is writable before going on. */
            {
                struct sockaddr_storage peer;
                socklen_t plen = sizeof(peer);

                if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) == -1)
                    return; /* not connected yet */
            }
            conn_connected(c, now);
            if (c->state == ST_READY)
                return;
            break;
        }
        case ST_HANDSHAKE:
            if (step_handshake(c, now) <= 0 || c->state == ST_READY)
                return;
            break;
        case ST_SEND:
            if (step_send(c, now) <= 0)
                return;
            break;
        case ST_RECV:
            if (step_recv(c, now) <= 0)
                return;
            /* response_done() moved us on; keep going unless we must wait */
            if (c->state == ST_READY || c->state == ST_HOLD || c->state == ST_NONE ||
                c->state == ST_FAILED)
                return;
            break;
        case ST_READY:
        case ST_HOLD:
            check_idle_conn(c, now);
            return;
        case ST_NONE:
        case ST_BACKOFF:
        case ST_FAILED:
            return;
        }
        if (atomic_load_explicit(&stop_flag, memory_order_relaxed))
            return;
    }
}

/* Rate mode: hand due requests to free slots, in turn: the first free slot
 * after the one used last. Always starting from slot 0 would leave the
 * higher slots of a keep-alive run idle for minutes (the first one is
 * nearly always free again at a low rate), and the server's keep-alive
 * timeout would close them: not the load the connection count promises. */
static void dispatch_due(struct thread *t, uint64_t now)
{
    while (t->next_sched_ns <= now && t->next_sched_ns <= t_end_ns) {
        struct conn *c = NULL;
        unsigned n;

        for (n = 0; n < t->nconns; n++) {
            struct conn *x = &t->conns[(t->next_slot + n) % t->nconns];

            if (x->state == ST_READY || x->state == ST_NONE) {
                c = x;
                break;
            }
        }
        if (c == NULL)
            return; /* every slot busy: the request waits (and is charged for it) */
        t->next_slot = (unsigned)(c - t->conns + 1) % t->nconns;
        c->scheduled = true;
        c->started_ns = t->next_sched_ns;
        c->requested = true;
        t->next_sched_ns += t->interval_ns;
        if (c->state == ST_NONE || c->fd == -1) {
            conn_start(c, now);
            if (c->state == ST_CONNECTING)
                conn_drive(c, now);
        } else {
            c->state = ST_SEND;
            conn_drive(c, now);
        }
    }
}

static bool has_free_slot(const struct thread *t)
{
    unsigned i;

    for (i = 0; i < t->nconns; i++) {
        if (t->conns[i].state == ST_READY || t->conns[i].state == ST_NONE)
            return true;
    }
    return false;
}

static void arm_timer(struct thread *t, uint64_t at_ns)
{
    struct itimerspec its;

    memset(&its, 0, sizeof(its));
    its.it_value.tv_sec = (time_t)(at_ns / NS_PER_S);
    its.it_value.tv_nsec = (long)(at_ns % NS_PER_S);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    (void)timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void check_timeouts(struct thread *t, uint64_t now)
{
    unsigned i;

    for (i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];

        switch (c->state) {
        case ST_CONNECTING:
        case ST_HANDSHAKE:
        case ST_SEND:
        case ST_RECV:
            if (now > c->deadline_ns)
                conn_fail(c, ERR_TIMEOUT, now);
            break;
        case ST_BACKOFF:
            if (now >= c->backoff_until) {
                c->state = ST_NONE;
                if (o.rate <= 0) {
                    conn_start(c, now);
                    if (c->state == ST_CONNECTING)
                        conn_drive(c, now);
                }
            }
            break;
        default:
            break;
        }
    }
}

/* Idle mode: open connections a batch at a time so the listen queue never overflows. */
static void idle_ramp(struct thread *t, uint64_t now)
{
    unsigned i;

    for (i = 0; i < t->nconns && t->pending_connects < MAX_PENDING_CONNECTS; i++) {
        struct conn *c = &t->conns[i];

        if (c->state != ST_NONE)
            continue;
        conn_start(c, now);
        if (c->state == ST_CONNECTING)
            conn_drive(c, now);
    }
}

/* Rate mode with keep-alive: the schedule starts once every connection is
 * open, so that handshakes are not charged to the first requests. */
static bool preconnect_wanted(void)
{
    return o.rate > 0 && o.mode == MODE_KEEPALIVE;
}

static void preconnect(struct thread *t)
{
    struct epoll_event evs[256];
    uint64_t now = now_ns(), deadline = now + 60 * NS_PER_S, last_tick = now;
    unsigned i, ready = 0;

    for (;;) {
        int n;

        ready = 0;
        for (i = 0; i < t->nconns; i++) {
            struct conn *c = &t->conns[i];

            if (c->state == ST_READY) {
                ready++;
            } else if (c->state == ST_NONE) {
                c->scheduled = false;
                conn_start(c, now);
                if (c->state == ST_CONNECTING)
                    conn_drive(c, now);
            }
        }
        if (ready == t->nconns || now > deadline || atomic_load(&stop_flag))
            break;
        n = epoll_wait(t->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), TICK_MS);
        if (n == -1 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        now = now_ns();
        for (i = 0; i < (unsigned)(n > 0 ? n : 0); i++) {
            struct conn *c = evs[i].data.ptr;

            if (c != NULL && c->fd != -1)
                conn_drive(c, now);
        }
        if (now - last_tick >= TICK_MS * NS_PER_MS) {
            last_tick = now;
            check_timeouts(t, now);
        }
    }
    if (ready < t->nconns)
        fprintf(stderr, "ztload: thread %u: only %u of %u connections open before the schedule\n",
                t->idx, ready, t->nconns);
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    struct epoll_event evs[256];
    uint64_t now, last_tick = 0;
    unsigned i;
    bool ramp_done = false;

    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (t->epfd == -1)
        die("epoll_create1: %s", strerror(errno));
    t->tfd = -1;
    if (o.rate > 0) {
        struct epoll_event ev;

        /* The default 50 us timer slack would show up in every latency. */
        (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

        t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (t->tfd == -1)
            die("timerfd_create: %s", strerror(errno));
        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->tfd, &ev) == -1)
            die("epoll_ctl: %s", strerror(errno));
    }
    if (preconnect_wanted()) {
        preconnect(t);
        atomic_fetch_add(&threads_ready, 1);
        /* main() sets the run's times, then raises go_flag. */
        while (!atomic_load(&go_flag) && !atomic_load(&stop_flag))
            usleep(200);
    }
    if (o.rate > 0) {
        t->interval_ns = (uint64_t)((double)NS_PER_S * o.threads / o.rate);
        if (t->interval_ns == 0)
            t->interval_ns = 1;
        t->next_sched_ns = t_start_ns + t->interval_ns * t->idx / o.threads;
    }

    /* Wait for the common start time so that threads begin together. */
    while ((now = now_ns()) < t_start_ns)
        usleep((useconds_t)((t_start_ns - now) / 1000 + 1));

    if (o.mode == MODE_IDLE) {
        idle_ramp(t, now);
    } else if (o.rate <= 0) {
        for (i = 0; i < t->nconns; i++) {
            conn_start(&t->conns[i], now);
            if (t->conns[i].state == ST_CONNECTING)
                conn_drive(&t->conns[i], now);
        }
    } else if (!preconnect_wanted()) {
        /* newconn/resume at a rate: each due request opens its connection. */
        for (i = 0; i < t->nconns; i++)
            t->conns[i].state = ST_READY;
    }

    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int n, timeout_ms = TICK_MS;

        if (o.rate > 0 && t->next_sched_ns <= t_end_ns && has_free_slot(t))
            arm_timer(t, t->next_sched_ns);
        n = epoll_wait(t->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout_ms);
        if (n == -1 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        now = now_ns();
        for (i = 0; i < (unsigned)(n > 0 ? n : 0); i++) {
            struct conn *c = evs[i].data.ptr;

            if (c == NULL) {
                uint64_t exp;

                if (read(t->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
                    die("timerfd read: %s", strerror(errno));
                continue;
            }
            if (c->fd == -1)
                continue;
            conn_drive(c, now);
        }
        if (o.rate > 0)
            dispatch_due(t, now);
        if (o.mode == MODE_IDLE && !ramp_done) {
            idle_ramp(t, now);
            ramp_done = true;
            for (i = 0; i < t->nconns; i++) {
                if (t->conns[i].state == ST_NONE)
                    ramp_done = false;
            }
        }
        if (now - last_tick >= TICK_MS * NS_PER_MS) {
            last_tick = now;
            check_timeouts(t, now);
        }
    }

    if (o.rate > 0) {
        /* Requests due before the end that never went out count against the server. */
        uint64_t end = t_end_ns, sched = t->next_sched_ns;

        if (sched < t_measure_ns)
            sched = t_measure_ns;
        if (sched <= end)
            t->st.late = (end - sched) / t->interval_ns + 1;
    }
    for (i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];

        if (c->ssl != NULL) {
            SSL_free(c->ssl);
            c->ssl = NULL;
        }
        if (c->fd != -1) {
            close(c->fd);
            c->fd = -1;
        }
        SSL_SESSION_free(c->sess);
        c->sess = NULL;
    }
    close(t->epfd);
    if (t->tfd != -1)
        close(t->tfd);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Reporting */

static double cpu_seconds(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) == -1)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void report(const struct stats *st, double window_s, double cpu_s)
{
    const struct hist *h = &st->lat;
    uint64_t errors = 0, non2xx = 0;
    double rps = window_s > 0 ? (double)st->requests / window_s : 0;
    double hps = window_s > 0 ? (double)st->handshakes / window_s : 0;
    double mean = h->count ? h->sum / (double)h->count : 0;
    double resumed_frac = st->handshakes ? (double)st->resumed / (double)st->handshakes : 0;
    unsigned i;

    for (i = 0; i < ERR_COUNT; i++)
        errors += st->errors[i];
    for (i = 0; i < 6; i++) {
        if (i != 2)
            non2xx += st->status[i];
    }

    if (o.json) {
        printf("{\"mode\":\"%s\",\"scheme\":", mode_names[o.mode]);
        json_str(stdout, o.tls ? "https" : "http");
        printf(",\"connect\":");
        json_str(stdout, o.addr_text);
        printf(",\"host\":");
        json_str(stdout, o.host);
        printf(",\"path\":");
        json_str(stdout, o.path);
        printf(",\"connections\":%u,\"threads\":%u,\"duration_s\":%.3f,\"rate\":%.1f,"
               "\"requests\":%" PRIu64 ",\"requests_total\":%" PRIu64
               ",\"rps\":%.1f,\"ok_2xx\":%" PRIu64 ",\"non_2xx\":%" PRIu64
               ",\"status\":{\"1xx\":%" PRIu64 ",\"3xx\":%" PRIu64 ",\"4xx\":%" PRIu64
               ",\"5xx\":%" PRIu64 "},\"errors\":%" PRIu64 ",\"error_kinds\":{",
               o.conns, o.threads, window_s, o.rate, st->requests, st->requests_all, rps,
               st->status[2], non2xx, st->status[1], st->status[3], st->status[4], st->status[5],
               errors);
        for (i = 0; i < ERR_COUNT; i++)
            printf("%s\"%s\":%" PRIu64, i ? "," : "", err_names[i], st->errors[i]);
        printf("},\"handshakes\":%" PRIu64 ",\"handshakes_per_s\":%.1f,\"resumed\":%" PRIu64
               ",\"resumed_frac\":%.4f,\"connects\":%" PRIu64 ",\"late\":%" PRIu64
               ",\"idle_closed\":%" PRIu64 ",\"latency_us\":{\"p50\":%" PRIu64 ",\"p90\":%" PRIu64
               ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64
               ",\"mean\":%.1f,\"min\":%" PRIu64 ",\"count\":%" PRIu64 "},\"client_cpu_s\":%.3f",
               st->handshakes, hps, st->resumed, resumed_frac, st->connects, st->late,
               st->idle_closed, hist_percentile(h, 50), hist_percentile(h, 90),
               hist_percentile(h, 99), hist_percentile(h, 99.9), h->count ? h->max : 0, mean,
               h->count ? h->min : 0, h->count, cpu_s);
        if (o.mode == MODE_IDLE)
            printf(",\"idle_established\":%u,\"idle_failed\":%u,\"idle_dropped\":%u",
                   atomic_load(&idle_established), atomic_load(&idle_failed),
                   atomic_load(&idle_dropped));
        printf("}\n");
        return;
    }

    printf("ztload %s %s://%s%s (connect %s), %u connections, %u threads", mode_names[o.mode],
           o.tls ? "https" : "http", o.host, o.path, o.addr_text, o.conns, o.threads);
    if (o.rate > 0)
        printf(", rate %.0f/s", o.rate);
    printf("\n");
    if (o.mode == MODE_IDLE) {
        printf("  idle connections: %u established, %u failed, %u dropped while held\n",
               atomic_load(&idle_established), atomic_load(&idle_failed),
               atomic_load(&idle_dropped));
    }
    printf("  window %.2f s: %" PRIu64 " requests, %.1f req/s; 2xx %" PRIu64 ", non-2xx %" PRIu64
           ", errors %" PRIu64 "\n",
           window_s, st->requests, rps, st->status[2], non2xx, errors);
    if (errors) {
        printf("  errors:");
        for (i = 0; i < ERR_COUNT; i++) {
            if (st->errors[i])
                printf(" %s=%" PRIu64, err_names[i], st->errors[i]);
        }
        printf("\n");
    }
    if (o.mode != MODE_KEEPALIVE || st->handshakes)
        printf("  handshakes %" PRIu64 " (%.1f/s), resumed %" PRIu64 " (%.1f%%)\n", st->handshakes,
               hps, st->resumed, 100.0 * resumed_frac);
    if (o.rate > 0)
        printf("  late (not sent or unanswered at the end): %" PRIu64 "\n", st->late);
    if (st->idle_closed)
        printf("  keep-alive connections closed by the server while idle (no request lost): "
               "%" PRIu64 "\n",
               st->idle_closed);
    printf("  latency us: p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64
           "  max %" PRIu64 "  mean %.1f\n",
           hist_percentile(h, 50), hist_percentile(h, 90), hist_percentile(h, 99),
           hist_percentile(h, 99.9), h->count ? h->max : 0, mean);
    printf("  client cpu %.2f s\n", cpu_s);
}

static void build_request(void)
{
    size_t len;
    unsigned i;
    int n = snprintf(request, sizeof(request),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ztload/1\r\nAccept: */*\r\n",
                     o.method, o.path, o.host);

    if (n < 0 || (size_t)n >= sizeof(request))
        die("request too long");
    len = (size_t)n;
    for (i = 0; i < o.nheaders; i++) {
        n = snprintf(request + len, sizeof(request) - len, "%s\r\n", o.headers[i]);
        if (n < 0 || (size_t)n >= sizeof(request) - len)
            die("request too long (--header)");
        len += (size_t)n;
    }
    if (len + 2 >= sizeof(request))
        die("request too long");
    memcpy(request + len, "\r\n", 3);
    request_len = len + 2;
}

static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)o.conns + 64)
        fprintf(stderr, "ztload: warning: open file limit %llu is below -c %u\n",
                (unsigned long long)rl.rlim_cur, o.conns);
}

static void sleep_until(uint64_t t)
{
    uint64_t now;

    while (!atomic_load(&stop_flag) && (now = now_ns()) < t) {
        uint64_t d = t - now;

        if (d > 50 * NS_PER_MS)
            d = 50 * NS_PER_MS;
        usleep((useconds_t)(d / 1000 + 1));
    }
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, true);
}

int main(int argc, char **argv)
{
    struct thread *threads;
    struct stats total;
    unsigned i, per, extra;
    double window_s, cpu_s;
    uint64_t end_actual, window_end;
    struct sigaction sa;

    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    raise_nofile();
    if (o.tls)
        setup_ssl_ctx();
    build_request();

    threads = calloc(o.threads, sizeof(*threads));
    if (threads == NULL)
        die("out of memory");
    per = o.conns / o.threads;
    extra = o.conns % o.threads;
    for (i = 0; i < o.threads; i++) {
        struct thread *t = &threads[i];
        unsigned j;

        t->idx = i;
        t->nconns = per + (i < extra ? 1 : 0);
        t->conns = calloc(t->nconns, sizeof(*t->conns));
        if (t->conns == NULL)
            die("out of memory");
        for (j = 0; j < t->nconns; j++) {
            t->conns[j].t = t;
            t->conns[j].fd = -1;
            t->conns[j].state = ST_NONE;
        }
        hist_init(&t->st.lat);
    }

    if (preconnect_wanted()) {
        /* Nothing is in the window until the connections are open. */
        t_measure_ns = UINT64_MAX;
        t_end_ns = 0;
        for (i = 0; i < o.threads; i++) {
            if (pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]) != 0)
                die("pthread_create failed");
        }
        while (atomic_load(&threads_ready) < o.threads && !atomic_load(&stop_flag))
            usleep(1000);
    }
    /* Threads read these only before they are created or after go_flag. */
    t_start_ns = now_ns() + 20 * NS_PER_MS;
    if (o.mode == MODE_IDLE) {
        /* Everything counts; the window is decided below. */
        t_measure_ns = t_start_ns;
        t_end_ns = UINT64_MAX;
    } else {
        t_measure_ns = t_start_ns + (uint64_t)(o.warmup * (double)NS_PER_S);
        t_end_ns = t_measure_ns + (uint64_t)(o.duration * (double)NS_PER_S);
    }
    window_end = t_end_ns;
    if (preconnect_wanted()) {
        atomic_store(&go_flag, true);
    } else {
        for (i = 0; i < o.threads; i++) {
            if (pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]) != 0)
                die("pthread_create failed");
        }
    }

    if (o.mode == MODE_IDLE) {
        uint64_t ramp_deadline = t_start_ns + (uint64_t)(o.ramp * (double)NS_PER_S), ready_at;

        while (!atomic_load(&stop_flag) && now_ns() < ramp_deadline &&
               atomic_load(&idle_established) + atomic_load(&idle_failed) < o.conns)
            usleep(10000);
        ready_at = now_ns();
        fprintf(stderr, "ztload: idle: %u established, %u failed in %.2f s; holding %.0f s\n",
                atomic_load(&idle_established), atomic_load(&idle_failed),
                (double)(ready_at - t_start_ns) / 1e9, o.hold);
        if (o.ready_file != NULL) {
            FILE *f = fopen(o.ready_file, "w");

            if (f == NULL) {
                fprintf(stderr, "ztload: %s: %s\n", o.ready_file, strerror(errno));
            } else {
                /* Connections open right now: what the server holds. */
                fprintf(f, "%u\n", atomic_load(&idle_established) - atomic_load(&idle_dropped));
                fclose(f);
            }
        }
        sleep_until(ready_at + (uint64_t)(o.hold * (double)NS_PER_S));
        window_end = now_ns();
    } else {
        sleep_until(t_end_ns);
    }
    end_actual = now_ns();
    atomic_store(&stop_flag, true);
    for (i = 0; i < o.threads; i++)
        pthread_join(threads[i].tid, NULL);

    memset(&total, 0, sizeof(total));
    hist_init(&total.lat);
    for (i = 0; i < o.threads; i++) {
        struct stats *s = &threads[i].st;
        unsigned k;

        total.requests += s->requests;
        total.requests_all += s->requests_all;
        for (k = 0; k < 6; k++)
            total.status[k] += s->status[k];
        for (k = 0; k < ERR_COUNT; k++)
            total.errors[k] += s->errors[k];
        total.handshakes += s->handshakes;
        total.resumed += s->resumed;
        total.connects += s->connects;
        total.late += s->late;
        total.idle_closed += s->idle_closed;
        hist_merge(&total.lat, &s->lat);
        free(threads[i].conns);
    }
    free(threads);
    if (end_actual > window_end)
        end_actual = window_end;
    window_s = end_actual > t_measure_ns ? (double)(end_actual - t_measure_ns) / 1e9 : 0;
    cpu_s = cpu_seconds();
    report(&total, window_s, cpu_s);
    SSL_CTX_free(ssl_ctx);
    return 0;
}
