/* Version queries and status names. */
#include "internal.h"

uint32_t tsq_version_number(void) { return TSQ_VERSION_NUMBER; }

const char *tsq_version_string(void) { return TSQ_VERSION_STRING; }

const char *tsq_status_string(tsq_status status)
{
    switch (status) {
    case TSQ_OK: return "TSQ_OK: success";
    case TSQ_ERR_NULL: return "TSQ_ERR_NULL: a required pointer argument was NULL";
    case TSQ_ERR_INVALID: return "TSQ_ERR_INVALID: an argument is out of its documented range";
    case TSQ_ERR_SHAPE: return "TSQ_ERR_SHAPE: tensor shapes do not fit together";
    case TSQ_ERR_DTYPE: return "TSQ_ERR_DTYPE: a tensor has the wrong element type";
    case TSQ_ERR_OVERFLOW: return "TSQ_ERR_OVERFLOW: a size computation would overflow";
    case TSQ_ERR_NO_MEMORY: return "TSQ_ERR_NO_MEMORY: out of memory";
    case TSQ_ERR_NOT_FINITE: return "TSQ_ERR_NOT_FINITE: NaN or Inf in the data";
    case TSQ_ERR_STATE: return "TSQ_ERR_STATE: the call is not valid in the object's state";
    case TSQ_ERR_UNSUPPORTED: return "TSQ_ERR_UNSUPPORTED: not available in this build or on this CPU";
    case TSQ_ERR_IO: return "TSQ_ERR_IO: reading or writing a file failed";
    case TSQ_ERR_FORMAT: return "TSQ_ERR_FORMAT: malformed or corrupt data";
    case TSQ_ERR_VERSION: return "TSQ_ERR_VERSION: unsupported format version";
    case TSQ_ERR_NO_DATA: return "TSQ_ERR_NO_DATA: nothing to work on";
    case TSQ_ERR_TOO_SMALL: return "TSQ_ERR_TOO_SMALL: a buffer is too small";
    case TSQ_ERR_INTERNAL: return "TSQ_ERR_INTERNAL: internal error in libtsq";
    case TSQ_ERR_CANCELLED: return "TSQ_ERR_CANCELLED: stopped by the progress callback";
    default: return "unknown status";
    }
}
