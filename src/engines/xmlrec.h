/* The XML record reader behind records_parse (REC_XML); see records_in.h for the rules. */
#ifndef TS_XMLREC_H
#define TS_XMLREC_H
#include "engines/records_in.h"

json_t *records__xml_parse(const char *data, size_t n, const struct rec_in_opts *o, char *err,
                           size_t errlen);
/* Rewrites string created_at / timestamp fields of rec parsed with fmt (strptime) as ISO 8601
 * UTC; fields that do not match fmt are left as they are. fmt NULL or "": nothing. */
void records__fix_dates(json_t *rec, const char *fmt);

#endif
