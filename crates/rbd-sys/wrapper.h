/* The C APIs bound by rbd-sys: librados (cluster, pools) and librbd (images). */
#include <rados/librados.h>
#include <rbd/librbd.h>
