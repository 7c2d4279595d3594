# Writes OUTPUT: a C++ source defining the OpenAPI document read from INPUT.
file(READ ${INPUT} TF_DOCUMENT)
file(WRITE ${OUTPUT} "// Generated from daemon/api/openapi.json; do not edit.\n#include <string>\nnamespace tameflare::api {\nextern const char* const kOpenApiDocument;\nconst char* const kOpenApiDocument = R\"tfopenapi(${TF_DOCUMENT})tfopenapi\";\n}  // namespace tameflare::api\n")
