/*
 * http_path.c - normalisation of request paths for routing and rules.
 *
 * One pass, writing into out[]: each segment is percent-decoded (only
 * unreserved characters; every other escape is kept with upper-case hex),
 * then judged: empty segments merge slashes, "." is dropped, ".." drops the
 * previous segment. Decoding happens before the dot test, so "%2e%2E" is
 * "..". The output is never longer than the input: decoding shrinks, the
 * other rewrites keep the length.
 *
 * Security: rules match on the result, so it must not be possible to name
 * one resource in two ways that the rules see differently. Hence %2F is an
 * error unless allowed (and is then kept encoded, since a decoded slash
 * would move a segment boundary), and anything a backend might interpret
 * differently (controls, SP, DEL, non-ASCII bytes, %00, broken escapes) is
 * refused rather than passed on. Raw '?' and '#' are refused: the caller
 * has split the query off and a fragment is never sent. So are raw ';'
 * (path parameters, which servlet containers strip before matching) and
 * double encoding ("%25" followed by two hex digits), which an upstream
 * that decodes twice would read as another path.
 */
#include "http.h"

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int http_path_normalize(const char *path, size_t len, unsigned flags, char *out, size_t *out_len,
                        const char **err)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)path;
    size_t i = 1, o = 1;

    *out_len = 0;
    if (len == 0 || p[0] != '/') {
        *err = "path does not start with '/'";
        return -1;
    }
    /* Invariant at the top of the loop: out[0..o) is normalised and ends
     * with '/', and p[i] is the first byte of a segment. */
    out[0] = '/';
    while (i < len) {
        size_t seg = o;

        for (; i < len && p[i] != '/'; i++) {
            unsigned char c = p[i];
            int hi, lo;

            if (c != '%') {
                if (c < 0x21 || c > 0x7e) {
                    *err = "invalid character in path";
                    return -1;
                }
                if (c == '?' || c == '#') {
                    *err = "'?' or '#' in path";
                    return -1;
                }
                /* Some upstreams (IIS, Windows file servers) treat '\\' as a
                 * separator: "/a\\..\\admin" would escape a path rule. */
                if (c == '\\') {
                    *err = "backslash in path";
                    return -1;
                }
                /* Servlet containers (Tomcat, Jetty, Spring) strip ";params"
                 * from each segment: "/admin;x" and "/..;/admin" would be
                 * "/admin" to them, not to a path rule. */
                if (c == ';') {
                    *err = "';' in path";
                    return -1;
                }
                out[o++] = (char)c;
                continue;
            }
            if (len - i < 3) {
                *err = "invalid percent-escape in path";
                return -1;
            }
            hi = hex_value(p[i + 1]);
            lo = hex_value(p[i + 2]);
            if (hi < 0 || lo < 0) {
                *err = "invalid percent-escape in path";
                return -1;
            }
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (c == 0) {
                *err = "%00 in path";
                return -1;
            }
            if ((c == '/' || c == '\\') && !(flags & HTTP_PATH_ALLOW_ENCODED_SLASH)) {
                *err = "encoded slash or backslash in path";
                return -1;
            }
            if (is_unreserved(c)) {
                out[o++] = (char)c;
            } else {
                out[o++] = '%';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 0xf];
            }
        }

        if (o - seg == 1 && out[seg] == '.') {
            o = seg;
        } else if (o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            /* Drop the previous segment; never above the root. */
            o = seg;
            if (o > 1) {
                o--;
                while (out[o - 1] != '/')
                    o--;
            }
        } else if (o > seg && i < len) {
            out[o++] = '/';
        }
        i++; /* the '/' ending the segment (or past the end) */
    }
    /* "%252e" is "%2e" once decoded: an upstream that decodes twice would
     * see "." (or any byte) where the rules saw "%2e". Checked on the output,
     * since "%25%34%31" becomes "%2541" there. */
    for (i = 0; i + 4 < o; i++) {
        if (out[i] == '%' && out[i + 1] == '2' && out[i + 2] == '5' &&
            hex_value((unsigned char)out[i + 3]) >= 0 &&
            hex_value((unsigned char)out[i + 4]) >= 0) {
            *err = "double percent-encoding in path";
            return -1;
        }
    }
    out[o] = '\0';
    *out_len = o;
    *err = NULL;
    return 0;
}
