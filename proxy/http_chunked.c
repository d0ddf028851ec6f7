/*
 * http_chunked.c - incremental decoder for the chunked transfer coding
 * (RFC 9112 7.1).
 *
 * A byte-at-a-time state machine, so that any split of the input gives the
 * same payload and the same verdict. Payload bytes are returned as slices of
 * the input, never copied.
 *
 * Choices (strict, because the framing decides where the next request
 * starts on a keep-alive connection):
 *  - chunk-size is 1 to 15 hex digits (leading zeros count), so at most
 *    2^60 - 1.
 *  - BWS is accepted between chunk-size and ';' only; "1 " CRLF is an error.
 *  - chunk-ext runs to the CR and may hold HTAB, SP, VCHAR and obs-text
 *    (what token, quoted-string and quoted-pair allow); its structure is not
 *    checked because it is discarded.
 *  - A size line, including its CRLF, is at most 4096 bytes.
 *  - The trailer section, from the first byte after the last-chunk's CRLF
 *    through the final CRLF, is at most 4096 bytes in total (so each
 *    trailer line is too). Trailer lines are checked like header lines:
 *    token name, no space before the colon, no obs-fold, value octets
 *    HTAB SP VCHAR obs-text.
 *  - CR must be followed by LF and LF must follow CR, everywhere.
 *  - After DONE or ERROR the decoder consumes nothing more and returns the
 *    same status again.
 */
#include "http.h"

#include <string.h>

#define CHUNK_LINE_MAX 4096
#define CHUNK_TRAILER_MAX 4096
#define CHUNK_SIZE_DIGITS 15

enum {
    CH_SIZE,     /* chunk-size hex digits */
    CH_SIZE_BWS, /* SP/HTAB after the size: ';' must follow */
    CH_EXT,      /* chunk-ext up to the CR */
    CH_SIZE_LF,  /* CR of the size line seen */
    CH_DATA,     /* remaining payload bytes */
    CH_DATA_CR,  /* CRLF after the data */
    CH_DATA_LF,
    CH_TRAILER_START, /* start of a trailer line or of the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_FINAL_LF,
    CH_DONE,
    CH_ERROR
};

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* HTAB SP VCHAR obs-text */
static int is_value(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

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

void http_chunked_init(struct http_chunked *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CH_SIZE;
}

static enum http_chunked_status chunked_fail(struct http_chunked *c, const char *why)
{
    c->state = CH_ERROR;
    c->error = why;
    return HTTP_CHUNKED_ERROR;
}

/*
 * One framing byte (any state but CH_DATA, CH_DONE, CH_ERROR). Returns
 * HTTP_CHUNKED_MORE to go on, HTTP_CHUNKED_DONE or HTTP_CHUNKED_ERROR.
 */
static enum http_chunked_status chunked_byte(struct http_chunked *c, unsigned char b)
{
    int h;

    switch (c->state) {
    case CH_SIZE:
    case CH_SIZE_BWS:
    case CH_EXT:
    case CH_SIZE_LF:
        if (++c->line_len > CHUNK_LINE_MAX)
            return chunked_fail(c, "chunk size line too long");
        break;
    case CH_TRAILER_START:
    case CH_TRAILER_NAME:
    case CH_TRAILER_VALUE:
    case CH_TRAILER_LF:
    case CH_FINAL_LF:
        if (++c->trailer_len > CHUNK_TRAILER_MAX)
            return chunked_fail(c, "chunked trailer section too large");
        break;
    default:
        break;
    }
    if (b == '\n' && c->state != CH_SIZE_LF && c->state != CH_DATA_LF &&
        c->state != CH_TRAILER_LF && c->state != CH_FINAL_LF)
        return chunked_fail(c, "bare LF in chunked body");

    switch (c->state) {
    case CH_SIZE:
        h = hex_value(b);
        if (h >= 0) {
            if (c->line_len > CHUNK_SIZE_DIGITS)
                return chunked_fail(c, "chunk size too large");
            c->remaining = c->remaining * 16 + (uint64_t)h;
            return HTTP_CHUNKED_MORE;
        }
        if (c->line_len == 1)
            return chunked_fail(c, "missing chunk size");
        if (b == '\r')
            c->state = CH_SIZE_LF;
        else if (b == ';')
            c->state = CH_EXT;
        else if (b == ' ' || b == '\t')
            c->state = CH_SIZE_BWS;
        else
            return chunked_fail(c, "invalid chunk size");
        return HTTP_CHUNKED_MORE;
    case CH_SIZE_BWS:
        if (b == ';')
            c->state = CH_EXT;
        else if (b != ' ' && b != '\t')
            return chunked_fail(c, "invalid chunk size line");
        return HTTP_CHUNKED_MORE;
    case CH_EXT:
        if (b == '\r')
            c->state = CH_SIZE_LF;
        else if (!is_value(b))
            return chunked_fail(c, "control character in chunk extension");
        return HTTP_CHUNKED_MORE;
    case CH_SIZE_LF:
        if (b != '\n')
            return chunked_fail(c, "bare CR in chunked body");
        c->line_len = 0;
        c->state = c->remaining == 0 ? CH_TRAILER_START : CH_DATA;
        return HTTP_CHUNKED_MORE;
    case CH_DATA_CR:
        if (b != '\r')
            return chunked_fail(c, "missing CRLF after chunk data");
        c->state = CH_DATA_LF;
        return HTTP_CHUNKED_MORE;
    case CH_DATA_LF:
        if (b != '\n')
            return chunked_fail(c, "missing CRLF after chunk data");
        c->state = CH_SIZE;
        return HTTP_CHUNKED_MORE;
    case CH_TRAILER_START:
        if (b == '\r') {
            c->state = CH_FINAL_LF;
        } else if (b == ' ' || b == '\t') {
            return chunked_fail(c, "obs-fold trailer line");
        } else if (b == ':') {
            return chunked_fail(c, "empty trailer name");
        } else if (is_tchar(b)) {
            c->state = CH_TRAILER_NAME;
        } else {
            return chunked_fail(c, "invalid character in trailer name");
        }
        return HTTP_CHUNKED_MORE;
    case CH_TRAILER_NAME:
        if (b == ':')
            c->state = CH_TRAILER_VALUE;
        else if (b == ' ' || b == '\t')
            return chunked_fail(c, "whitespace before colon in trailer");
        else if (b == '\r')
            return chunked_fail(c, "trailer line without colon");
        else if (!is_tchar(b))
            return chunked_fail(c, "invalid character in trailer name");
        return HTTP_CHUNKED_MORE;
    case CH_TRAILER_VALUE:
        if (b == '\r')
            c->state = CH_TRAILER_LF;
        else if (!is_value(b))
            return chunked_fail(c, "control character in trailer value");
        return HTTP_CHUNKED_MORE;
    case CH_TRAILER_LF:
        if (b != '\n')
            return chunked_fail(c, "bare CR in chunked body");
        c->state = CH_TRAILER_START;
        return HTTP_CHUNKED_MORE;
    case CH_FINAL_LF:
        if (b != '\n')
            return chunked_fail(c, "bare CR in chunked body");
        c->state = CH_DONE;
        return HTTP_CHUNKED_DONE;
    default:
        return chunked_fail(c, "chunked decoder in invalid state");
    }
}

enum http_chunked_status http_chunked_feed(struct http_chunked *c, const char *in, size_t len,
                                           size_t *consumed, const char **data, size_t *data_len)
{
    enum http_chunked_status st = HTTP_CHUNKED_MORE;
    size_t i = 0;

    *data = NULL;
    *data_len = 0;
    if (c->state == CH_DONE) {
        st = HTTP_CHUNKED_DONE;
        goto out;
    }
    if (c->state == CH_ERROR) {
        st = HTTP_CHUNKED_ERROR;
        goto out;
    }
    while (i < len) {
        if (c->state == CH_DATA) {
            size_t n = len - i;

            if ((uint64_t)n > c->remaining)
                n = (size_t)c->remaining;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            *data = in + i;
            *data_len = n;
            i += n;
            st = HTTP_CHUNKED_DATA;
            goto out;
        }
        st = chunked_byte(c, (unsigned char)in[i]);
        if (st == HTTP_CHUNKED_ERROR)
            goto out;
        i++;
        if (st == HTTP_CHUNKED_DONE)
            goto out;
    }
out:
    *consumed = i;
    return st;
}
