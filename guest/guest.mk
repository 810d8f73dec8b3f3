# Guest image: a small i386 Linux for v86, built from Debian packages only
# (linux-source-6.1, busybox-static:i386, seabios). Included by the top-level
# Makefile, whose `build` depends on `guest-image` and `uml-guest`. Everything heavy lives in
# $(GUEST_CACHE); only the files below are written to web/dist:
#   web/dist/guest/{bzImage,initrd.gz,cmdline.txt}, web/dist/bios/{seabios,vgabios}.bin
# The first build extracts Linux (~1.5 GB) and compiles it (~5 min on 2
# cores); afterwards the kernel is rebuilt only when guest/kernel.config or
# the source tarball changes, the initramfs only when its inputs change.

GUEST_CACHE ?= $(or $(CACHE),.cache)/guest
GUEST_LINUX_TAR ?= /usr/src/linux-source-6.1.tar.xz
GUEST_SEABIOS ?= /usr/share/seabios
GUEST_V86 ?= web/node_modules/v86

GUEST_SRC := $(GUEST_CACHE)/linux
GUEST_SRC_STAMP := $(GUEST_SRC)/.peerlan-extracted
GUEST_KBUILD := $(GUEST_CACHE)/kbuild
GUEST_BUSYBOX := $(GUEST_CACHE)/busybox/VERSION
GUEST_GEN_CPIO := $(GUEST_CACHE)/gen_init_cpio
GUEST_ROOTFS := $(shell find guest/rootfs -type f 2>/dev/null)
GUEST_DIST := web/dist/guest
GUEST_BIOS_DIST := web/dist/bios
GUEST_OUTPUTS := $(GUEST_DIST)/bzImage $(GUEST_DIST)/initrd.gz $(GUEST_DIST)/cmdline.txt \
	$(GUEST_BIOS_DIST)/seabios.bin $(GUEST_BIOS_DIST)/vgabios.bin

.PHONY: guest-image uml-guest guest-boottest guest-clean

guest-image: $(GUEST_OUTPUTS)
	@echo "guest: image ready: $(GUEST_DIST) (bzImage $$(stat -c %s $(GUEST_DIST)/bzImage) B, initrd.gz $$(stat -c %s $(GUEST_DIST)/initrd.gz) B), BIOS in $(GUEST_BIOS_DIST)"

$(GUEST_SRC_STAMP): $(GUEST_LINUX_TAR) guest/extract-linux.sh
	@guest/extract-linux.sh $(GUEST_LINUX_TAR) $(GUEST_SRC) $(GUEST_KBUILD)

$(GUEST_DIST)/bzImage: $(GUEST_SRC_STAMP) guest/kernel.config guest/build-kernel.sh
	@guest/build-kernel.sh $(GUEST_SRC) $(GUEST_KBUILD) guest/kernel.config $@

# The kernel's own cpio writer: owners and device nodes without root.
$(GUEST_GEN_CPIO): $(GUEST_SRC_STAMP)
	@echo "guest: building gen_init_cpio"
	@$(or $(HOSTCC),cc) -O2 -o $@ $(GUEST_SRC)/usr/gen_init_cpio.c

$(GUEST_BUSYBOX): guest/fetch-busybox.sh
	@guest/fetch-busybox.sh $(GUEST_CACHE) i386

$(GUEST_DIST)/initrd.gz: $(GUEST_GEN_CPIO) $(GUEST_BUSYBOX) guest/build-initrd.sh guest/init guest/udhcpc.script $(GUEST_ROOTFS)
	@echo "guest: building the initramfs"
	@guest/build-initrd.sh $(GUEST_GEN_CPIO) $(GUEST_CACHE)/busybox $@

$(GUEST_DIST)/cmdline.txt: guest/cmdline.txt
	@mkdir -p $(@D)
	@cp $< $@

$(GUEST_BIOS_DIST)/seabios.bin: $(GUEST_SEABIOS)/bios.bin
	@mkdir -p $(@D)
	@cp $< $@

$(GUEST_BIOS_DIST)/vgabios.bin: $(GUEST_SEABIOS)/vgabios-stdvga.bin
	@mkdir -p $(@D)
	@cp $< $@

# The UML guest: an initramfs for Debian's user-mode-linux (an x86-64 kernel,
# so busybox-static:amd64) with the same /init, DHCP script and rootfs. It
# stays in the cache (e2e/uml_test.go boots it; README "UML guests"); the
# page never serves it. Seconds to build once gen_init_cpio exists.
UML_CACHE := $(GUEST_CACHE)/uml
UML_BUSYBOX := $(UML_CACHE)/busybox/VERSION
UML_INITRD := $(UML_CACHE)/initrd.gz

uml-guest: $(UML_INITRD)
	@echo "guest: UML initramfs ready: $(UML_INITRD) ($$(stat -c %s $(UML_INITRD)) B)"

$(UML_BUSYBOX): guest/fetch-busybox.sh
	@guest/fetch-busybox.sh $(UML_CACHE) amd64

$(UML_INITRD): $(GUEST_GEN_CPIO) $(UML_BUSYBOX) guest/build-initrd.sh guest/init guest/udhcpc.script $(GUEST_ROOTFS)
	@echo "guest: building the UML initramfs"
	@guest/build-initrd.sh $(GUEST_GEN_CPIO) $(UML_CACHE)/busybox $@

# Boots the image in v86 under Node with each NIC model and checks DHCP,
# ping and Ctrl-C (needs the v86 npm package, installed by web-assets).
guest-boottest: guest-image
	@test -f $(GUEST_V86)/build/libv86.mjs || { echo "guest: $(GUEST_V86) missing: install the v86 npm package (make web-assets) or set GUEST_V86"; exit 1; }
	@for nic in virtio ne2k; do node guest/boottest.mjs $(GUEST_V86) $(GUEST_DIST) --nic $$nic --net || exit 1; done

# Removes the guest's cache and its files in web/dist, nothing else.
guest-clean:
	rm -rf $(GUEST_CACHE) $(GUEST_OUTPUTS)
