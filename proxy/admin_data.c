/*
 * admin_data.c - TEMPORARY placeholder for the admin endpoint groups of
 * admin_int.h (what-if, devices, directory, sessions, decisions).
 *
 * The real implementation is written on the "admindata" branch and
 * replaces this file wholesale when it is merged: keep nothing else here.
 * Until then every call answers 501.
 */
#include "admin_int.h"

static void ad_not_yet(const struct admin_call *c, struct admin_reply *out)
{
    admin_error(out, 501, "not_implemented", "%s is not implemented yet", c->path);
}

void admin_whatif(const struct admin_call *c, struct admin_reply *out)
{
    ad_not_yet(c, out);
}

void admin_devices(const struct admin_call *c, struct admin_reply *out)
{
    ad_not_yet(c, out);
}

void admin_directory(const struct admin_call *c, struct admin_reply *out)
{
    ad_not_yet(c, out);
}

void admin_sessions(const struct admin_call *c, struct admin_reply *out)
{
    ad_not_yet(c, out);
}

void admin_decisions(const struct admin_call *c, struct admin_reply *out)
{
    ad_not_yet(c, out);
}
