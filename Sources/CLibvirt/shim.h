#include <stddef.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* The lifecycle callback has its own signature; libvirt registers every
   event kind through the generic one (VIR_DOMAIN_EVENT_CALLBACK, a macro
   Swift cannot use), so the cast is done here. */
typedef void (*usbredir_lifecycle_cb)(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque);

static inline int usbredir_register_lifecycle(virConnectPtr conn, usbredir_lifecycle_cb cb, void *opaque) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, NULL);
}

/* libvirt prints every error on stderr unless an error function is set;
   errors are read from virGetLastErrorMessage() instead. */
static void usbredir_libvirt_quiet(void *data, virErrorPtr error) { (void)data; (void)error; }
static inline void usbredir_libvirt_silence(void) { virSetErrorFunc(NULL, usbredir_libvirt_quiet); }
