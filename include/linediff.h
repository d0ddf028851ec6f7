/*
 * linediff.h - a line-based unified diff of two texts (the admin API's
 * rules diff). Pure: strings in, a new string out.
 *
 * Lines are split on '\n' (a final line without one counts as a line).
 * The common prefix and suffix are stripped; the rest is aligned with a
 * longest common subsequence, bounded to LINEDIFF_CELLS_MAX table cells
 * (beyond that the differing middle is shown as removed then added: still
 * a correct diff, only not minimal).
 */
#ifndef ZT_LINEDIFF_H
#define ZT_LINEDIFF_H

#include <stddef.h>

#define LINEDIFF_CELLS_MAX (4u * 1024 * 1024)

/*
 * The unified diff of a -> b with context lines of context:
 *   --- label_a
 *   +++ label_b
 *   @@ -1,3 +1,4 @@
 *    same
 *   -old
 *   +new
 * "" when the texts are equal. A new string (caller frees), NULL when out
 * of memory.
 */
char *linediff_unified(const char *a, const char *b, const char *label_a, const char *label_b,
                       size_t context);

#endif
