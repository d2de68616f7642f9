/* json_tree.c — any JSON text kiln reads into a cJSON tree (kiln_json_tree, frontend.h):
 * model files (model.c), and the other JSON the driver reads, such as `--log` files for
 * `kiln plot`. Split from model.c, so that it holds only the model loader. */
#include "fe.h"
#include "json_min.h"

#define FE_MAX_JSON_VALUES (1 << 22) /* the document ~56 bytes per value, cJSON's tree ~64 */

/* The text is read by the runtime's one strict JSON reader (runtime/json_min.c: RFC
 * 8259 exactly, strict UTF-8, bounded depth and value count, errors with line:column)
 * and its document turned into the cJSON tree the rest of the frontend walks: cJSON is
 * only that tree, never the parser. */
static cJSON *to_tree(const jm_doc *doc, int32_t i)
{
    const jm_value *v = &doc->v[i];
    cJSON *out;
    switch ((jm_kind)v->kind) {
    case JM_NULL: out = cJSON_CreateNull(); break;
    case JM_BOOL: out = cJSON_CreateBool(v->num != 0); break;
    case JM_NUMBER: out = cJSON_CreateNumber(v->dbl); break;
    case JM_STRING: out = cJSON_CreateString(v->str); break;
    default:
        out = v->kind == JM_ARRAY ? cJSON_CreateArray() : cJSON_CreateObject();
        for (int32_t k = v->first; k >= 0 && out; k = doc->v[k].next) {
            cJSON *kid = to_tree(doc, k); /* depth is bounded by JM_MAX_DEPTH */
            KILN_ASSERT(kid != NULL);
            if (v->kind == JM_ARRAY) cJSON_AddItemToArray(out, kid);
            else cJSON_AddItemToObject(out, doc->v[k].key, kid);
        }
        break;
    }
    KILN_ASSERT(out != NULL); /* cJSON allocation failed */
    return out;
}

cJSON *kiln_json_tree(const char *text, size_t len, jm_error *err)
{
    jm_doc doc;
    if (jm_parse(text, len, FE_MAX_JSON_VALUES, &doc, err) != 0) return NULL;
    cJSON *root = to_tree(&doc, 0);
    jm_free(&doc);
    return root;
}
