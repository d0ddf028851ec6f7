/*
 * conf.h - the proxy configuration: parsed, validated completely, immutable.
 *
 * The struct is public on purpose: it is plain data every module reads, and
 * it is never changed after conf_load() returns. A reload builds a new one;
 * holders keep the old one alive with conf_ref()/conf_unref().
 */
#ifndef ZT_CONF_H
#define ZT_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "device_id.h"
#include "log.h"

enum conf_unauth { CONF_UNAUTH_REJECT = 0, CONF_UNAUTH_ENROLL_PAGE };

struct conf_listener {
    char *text; /* as written, for logs */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int backlog;
    /* "proxy_protocol": every connection starts with a PROXY protocol v2
     * header (proxyproto.h), read before the TLS handshake, and only from
     * peers in trusted_proxies: the listener's own "trusted_proxies", else a
     * copy of policy.trusted_proxies (never empty: conf_parse() refuses). */
    int proxy_protocol;
    struct conf_cidr *trusted_proxies;
    size_t ntrusted_proxies;
};

enum conf_auth_mode {
    CONF_AUTH_NONE = 0, /* device certificate only */
    CONF_AUTH_SESSION,  /* SSO session cookie (browser) */
    CONF_AUTH_BEARER,   /* Authorization: Bearer <provider JWT> (CLI) */
    CONF_AUTH_ANY       /* either */
};

enum conf_user_header { CONF_USER_EMAIL = 0, CONF_USER_SUBJECT };

/* An address range: family AF_INET (addr[0..3]) or AF_INET6, prefix bits. */
struct conf_cidr {
    int family;
    unsigned bits;
    uint8_t addr[16];
};

/* An OpenID Connect provider (identity.providers[]). */
struct conf_provider {
    char *name;
    char *issuer; /* exact "iss"; discovery at issuer + /.well-known/... */
    char *client_id;
    char *client_secret; /* read from client_secret_file; wiped on free */
    char *scopes;        /* space-separated, always includes "openid" */
    char *ca;            /* CA bundle for https:// to the provider, NULL: system */
    uint64_t clock_skew_ms;
    uint64_t jwks_min_refresh_ms; /* refetch the JWKS at most this often on unknown kid */
    char **bearer_audiences;      /* accepted "aud" of bearer tokens */
    size_t nbearer_audiences;
    char *mfa_acr; /* an acr value that means MFA ("" if none) */
};

struct conf_route {
    char *name;
    char *host;        /* lower case, no port */
    char *path_prefix; /* "/" or "/x" without trailing slash */
    size_t path_prefix_len;
    char *upstream; /* as written */
    int upstream_tls;
    char *upstream_host;
    int upstream_port;
    struct sockaddr_storage upstream_addr;
    socklen_t upstream_addrlen;
    char *upstream_ca;          /* NULL: system store */
    int upstream_verify;        /* verify certificate and name */
    char *upstream_server_name; /* SNI and name to verify */
    uint64_t max_body_size;     /* 0: unlimited */
    int websocket;
    int allow_encoded_slash;
    int pool_size;
    /* Groups sent upstream (X-ZT-Groups, assertion): 0 only those the
     * route's rules name ("referenced", the default), 1 all ("all"). */
    int forward_groups_all;

    /* identity (meaningful when the config has an identity section) */
    enum conf_auth_mode auth_mode;
    int auth_provider; /* index into providers, -1 when auth_mode is NONE */
    int bearer_bound;  /* bearer tokens must carry cnf.x5t#S256 of the device cert */
    enum conf_user_header user_header;
    uint64_t max_auth_age_ms; /* 0: no limit beyond the session's own */
    int require_mfa;
};

struct conf {
    char *path; /* the file it came from */

    struct conf_listener *listeners;
    size_t nlisteners;
    int workers; /* resolved: "auto" became the core count */

    char *tls_certificate;
    char *tls_key;
    char *tls_device_ca;
    char *tls_crl; /* NULL: none */
    enum conf_unauth tls_unauthenticated;
    char *tls_enroll_url; /* NULL: none */
    int tls_session_tickets;
    uint64_t tls_ticket_key_lifetime_ms;
    int tls_session_cache_server;        /* 1: "session_cache": "server", 0: "tickets" */
    unsigned int tls_session_cache_size; /* "session_cache_size": most sessions held */

    enum device_id_source devid_source;
    char *devid_prefix;

    uint64_t timeout_handshake_ms;
    uint64_t timeout_header_ms;
    uint64_t timeout_keepalive_ms;
    uint64_t timeout_body_ms;
    uint64_t timeout_upstream_connect_ms;
    uint64_t timeout_upstream_response_ms;
    uint64_t timeout_send_ms;
    uint64_t timeout_shutdown_grace_ms;
    uint64_t timeout_shutdown_delay_ms; /* SIGTERM: /readyz 503 this long before the drain */

    size_t limit_request_line;
    size_t limit_header_size;
    size_t limit_header_count;
    uint64_t limit_body_size;
    size_t limit_connections;

    char *access_log; /* path, "stderr" or "off" */
    enum log_level log_level;

    struct conf_route *routes;
    size_t nroutes;
    /* conf_route_match()'s index: a hash table of the route hosts.
     * route_keys[i]: route i's host hashed (its length in the low byte);
     * route_bucket[h & route_mask]: 1 + the first route in that bucket,
     * route_next[i]: 1 + the next one (0 ends a chain). */
    uint32_t *route_keys;
    uint32_t *route_bucket;
    uint32_t *route_next;
    uint32_t route_mask;

    char *state_dir; /* persistent state (revocations, posture); NULL: none */

    /* identity: nproviders == 0 means no SSO at all */
    struct conf_provider *providers;
    size_t nproviders;
    char *session_cookie_name; /* without the __Host- prefix */
    char *session_keys;        /* key ring file */
    uint64_t session_lifetime_ms;
    uint64_t session_idle_ms;
    uint64_t login_timeout_ms; /* how long a login round trip may take */
    char *assertion_key;       /* directory of ES256 keys (*.pem) for X-ZT-Assertion */
    char *assertion_issuer;
    uint64_t assertion_lifetime_ms;
    size_t assertion_groups_budget; /* bytes of group names in headers */

    /* The config file's directory ("" for the working directory): relative
     * paths in sections kept as JSON (device_trust) resolve against it. */
    char *basedir;
    /* The "device_trust" section as written (a jansson json_t, deep copy,
     * owned by the conf), NULL if absent. conf.c does not look inside:
     * devtrust_validate() does. */
    struct json_t *device_trust;

    int refs; /* atomic; see conf_ref() */

    /* "policy" (include/authz.h, docs/policy.md "Operating rules").
     * policy_rules NULL: no section, no rules (every verified request passes). */
    char *policy_rules;          /* rules file, resolved */
    char *policy_dir_file;       /* directory from a file, or NULL */
    char *policy_dir_url;        /* directory from http(s)://, or NULL */
    uint64_t policy_dir_poll_ms; /* url: how often to ask */
    uint64_t policy_dir_timeout_ms;
    char *policy_dir_ca;                      /* url: CA bundle, NULL: system */
    char *policy_dir_token_file;              /* url: bearer token file (private), or NULL */
    char *policy_geoip;                       /* MaxMind .mmdb, NULL: countries are "unknown" */
    struct conf_cidr *policy_trusted_proxies; /* whose X-Forwarded-For is believed */
    size_t npolicy_trusted_proxies;
    char *policy_audit_log;  /* path, "stdout", "stderr" or "off" */
    int policy_deny_details; /* the deny page shows the rule and its reasons */

    /* "admin" (include/admin.h, docs/admin-api.md). admin_listener NULL: no
     * section, no admin listener. */
    struct conf_listener *admin_listener;
    char *admin_client_ca;       /* resolved; defaults to tls_device_ca */
    char **admin_groups;         /* directory groups whose members are admins */
    size_t nadmin_groups;        /* 0: no certificate is admin */
    char *admin_token_file;      /* private "name:token" lines, or NULL */
    char *admin_console_dir;     /* static files served at /, or NULL */
    size_t admin_decisions_ring; /* recent decisions kept (default 10000) */

    /* "redis": shared state for replicas (include/shared.h, docs/deploy.md).
     * redis_address NULL: no section, the embedded state only. */
    char *redis_address; /* "IPv4:port", "[IPv6]:port", "name:port" as written */
    char *redis_host;    /* the address or name alone */
    int redis_port;
    char *redis_password;              /* from password_file, or NULL; wiped on free */
    char *redis_prefix;                /* key and channel prefix, default "ztproxy:" */
    uint64_t redis_connect_timeout_ms; /* default 2s */
};

/* Flags for conf_parse(). */
#define CONF_NO_FS 0x1 /* do not touch the filesystem or resolve names (fuzzing) */

/*
 * Parse and validate configuration text. name is used in messages, basedir
 * resolves relative paths. On success returns 0 and *out (refcount 1, free
 * with conf_unref()). On failure returns -1, leaves *out untouched and writes
 * one line "name: $.json.path: what was expected" into err.
 */
int conf_parse(const char *text, size_t len, const char *name, const char *basedir, unsigned flags,
               struct conf **out, char *err, size_t errlen);

/* Read FILE and conf_parse() it. */
int conf_load(const char *file, struct conf **out, char *err, size_t errlen);

struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);

/*
 * Route lookup: host (any case, without port) and a normalised path. The
 * longest matching path prefix on whole segments wins. NULL: no route.
 */
const struct conf_route *conf_route_match(const struct conf *c, const char *host, size_t host_len,
                                          const char *path, size_t path_len);

/* Parse "10s", "500ms", "2m", "1h" -> milliseconds. 0 ok, -1 invalid. */
int conf_duration_parse(const char *s, uint64_t *ms);
/* Parse "16k", "1g", "512b", "100" -> bytes. 0 ok, -1 invalid. */
int conf_size_parse(const char *s, uint64_t *bytes);

#endif
