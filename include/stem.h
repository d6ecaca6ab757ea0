/* stem: whether the output names of two stems meet. A stem S writing n
 * outputs writes files of the bases S (S.json, S.error.json, and S<ext> for
 * one output) and, for n > 1, S-1 .. S-n (S-k<ext>); a sidecar <B>.json
 * claims the image <B><ext>, so two stems that share a base would claim or
 * overwrite each other's files. The stem S.error meets S too: its sidecar
 * S.error.json is S's error record. Pure. */
#ifndef SEEDREAMD_STEM_H
#define SEEDREAMD_STEM_H

#include <stdbool.h>

/* Whether stem a writing a_outputs images and stem b writing b_outputs share
 * a base (0 outputs counts as 1). */
bool stem_outputs_meet(const char *a, unsigned a_outputs, const char *b, unsigned b_outputs);

#endif
