/*
 * linediff.c - line-based unified diff (include/linediff.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linediff.h"

struct ld_line {
    const char *p;
    size_t n;
};

struct ld_lines {
    struct ld_line *v;
    size_t n;
};

enum ld_op { LD_EQ = 0, LD_DEL, LD_ADD };

struct ld_edit {
    enum ld_op op;
    size_t a, b; /* line index in a (EQ, DEL) and in b (EQ, ADD) */
};

struct ld_buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void ld_put(struct ld_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;

        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void ld_puts(struct ld_buf *b, const char *s)
{
    ld_put(b, s, strlen(s));
}

static int ld_split(const char *s, struct ld_lines *out)
{
    size_t n = 0, i = 0;
    const char *p;

    out->v = NULL;
    out->n = 0;
    for (p = s; *p != '\0'; p++)
        if (*p == '\n')
            n++;
    if (p > s && p[-1] != '\n')
        n++;
    if (n == 0)
        return 0;
    out->v = calloc(n, sizeof(*out->v));
    if (out->v == NULL)
        return -1;
    p = s;
    while (*p != '\0') {
        const char *e = strchr(p, '\n');
        size_t l = e != NULL ? (size_t)(e - p) : strlen(p);

        out->v[i].p = p;
        out->v[i].n = l;
        i++;
        p += l + (e != NULL);
    }
    out->n = i;
    return 0;
}

static int ld_eq(const struct ld_line *x, const struct ld_line *y)
{
    return x->n == y->n && memcmp(x->p, y->p, x->n) == 0;
}

/* The edit script of a -> b into *out (*nout entries). */
static int ld_script(const struct ld_lines *a, const struct ld_lines *b, struct ld_edit **out,
                     size_t *nout)
{
    size_t pre = 0, suf = 0, na, nb, i, j, k = 0;
    struct ld_edit *e = malloc((a->n + b->n + 1) * sizeof(*e));
    uint32_t *t = NULL;

    if (e == NULL)
        return -1;
    while (pre < a->n && pre < b->n && ld_eq(&a->v[pre], &b->v[pre]))
        pre++;
    while (suf < a->n - pre && suf < b->n - pre &&
           ld_eq(&a->v[a->n - 1 - suf], &b->v[b->n - 1 - suf]))
        suf++;
    na = a->n - pre - suf;
    nb = b->n - pre - suf;
    for (i = 0; i < pre; i++)
        e[k++] = (struct ld_edit){LD_EQ, i, i};
    if (na > 0 && nb > 0 && (na + 1) <= LINEDIFF_CELLS_MAX / (nb + 1)) {
        /* t[i][j]: LCS length of a[pre+i..] and b[pre+j..] */
        size_t w = nb + 1;

        t = calloc((na + 1) * w, sizeof(*t));
        if (t == NULL) {
            free(e);
            return -1;
        }
        for (i = na; i-- > 0;)
            for (j = nb; j-- > 0;)
                t[i * w + j] = ld_eq(&a->v[pre + i], &b->v[pre + j])
                                   ? t[(i + 1) * w + j + 1] + 1
                                   : (t[(i + 1) * w + j] >= t[i * w + j + 1] ? t[(i + 1) * w + j]
                                                                             : t[i * w + j + 1]);
        i = 0;
        j = 0;
        while (i < na || j < nb) {
            if (i < na && j < nb && ld_eq(&a->v[pre + i], &b->v[pre + j])) {
                e[k++] = (struct ld_edit){LD_EQ, pre + i, pre + j};
                i++;
                j++;
            } else if (i < na && (j == nb || t[(i + 1) * w + j] >= t[i * w + j + 1])) {
                e[k++] = (struct ld_edit){LD_DEL, pre + i, pre + j};
                i++;
            } else {
                e[k++] = (struct ld_edit){LD_ADD, pre + i, pre + j};
                j++;
            }
        }
        free(t);
    } else {
        /* Too big to align (or one side empty): all out, then all in. */
        for (i = 0; i < na; i++)
            e[k++] = (struct ld_edit){LD_DEL, pre + i, pre};
        for (j = 0; j < nb; j++)
            e[k++] = (struct ld_edit){LD_ADD, pre + na, pre + j};
    }
    for (i = 0; i < suf; i++)
        e[k++] = (struct ld_edit){LD_EQ, pre + na + i, pre + nb + i};
    *out = e;
    *nout = k;
    return 0;
}

static void ld_line_out(struct ld_buf *o, char mark, const struct ld_line *l)
{
    ld_put(o, &mark, 1);
    ld_put(o, l->p, l->n);
    ld_put(o, "\n", 1);
}

char *linediff_unified(const char *a, const char *b, const char *label_a, const char *label_b,
                       size_t context)
{
    struct ld_lines la = {NULL, 0}, lb = {NULL, 0};
    struct ld_edit *e = NULL;
    struct ld_buf o = {NULL, 0, 0, 0};
    size_t n = 0, i = 0;
    char hdr[128];

    if (ld_split(a, &la) == -1 || ld_split(b, &lb) == -1 || ld_script(&la, &lb, &e, &n) == -1)
        goto oom;
    ld_put(&o, "", 0);
    while (i < n) {
        size_t start, end, k, ca = 0, cb = 0, sa, sb;

        while (i < n && e[i].op == LD_EQ)
            i++;
        if (i == n)
            break;
        if (o.len == 0) {
            ld_puts(&o, "--- ");
            ld_puts(&o, label_a);
            ld_puts(&o, "\n+++ ");
            ld_puts(&o, label_b);
            ld_puts(&o, "\n");
        }
        /* A hunk: context before, changes joined while the equal run
         * between them is at most 2 * context, context after. */
        start = i > context ? i - context : 0;
        end = i;
        for (;;) {
            size_t run = 0;

            while (end < n && e[end].op != LD_EQ)
                end++;
            while (end + run < n && e[end + run].op == LD_EQ)
                run++;
            if (end + run < n && run <= 2 * context) {
                end += run;
                continue;
            }
            end += run < context ? run : context;
            break;
        }
        for (k = start; k < end; k++) {
            if (e[k].op != LD_ADD)
                ca++;
            if (e[k].op != LD_DEL)
                cb++;
        }
        sa = e[start].a + (ca > 0);
        sb = e[start].b + (cb > 0);
        snprintf(hdr, sizeof(hdr), "@@ -%zu,%zu +%zu,%zu @@\n", sa, ca, sb, cb);
        ld_puts(&o, hdr);
        for (k = start; k < end; k++) {
            if (e[k].op == LD_EQ)
                ld_line_out(&o, ' ', &la.v[e[k].a]);
            else if (e[k].op == LD_DEL)
                ld_line_out(&o, '-', &la.v[e[k].a]);
            else
                ld_line_out(&o, '+', &lb.v[e[k].b]);
        }
        i = end;
    }
    if (o.oom)
        goto oom;
    free(e);
    free(la.v);
    free(lb.v);
    return o.p;
oom:
    free(o.p);
    free(e);
    free(la.v);
    free(lb.v);
    return NULL;
}
