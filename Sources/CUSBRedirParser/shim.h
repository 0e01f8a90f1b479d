#include <usbredirproto.h>
#include <usbredirparser.h>
#include <usbredirfilter.h>
