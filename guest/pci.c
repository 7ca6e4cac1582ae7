/* PCI configuration mechanism 1 (ports 0xcf8/0xcfc) on bus 0, from CPL3. */
#include "virtio.h"

#define PCI_ADDR        0xcf8
#define PCI_DATA        0xcfc
#define PCI_CAP_MSIX    0x11

static u32 pci_addr(const struct pci_dev *d, u8 off)
{
    return 0x80000000u | ((u32)d->slot << 11) | ((u32)d->func << 8) | (off & 0xfc);
}

u32 pci_read32(const struct pci_dev *d, u8 off)
{
    outl(PCI_ADDR, pci_addr(d, off));
    return inl(PCI_DATA);
}

void pci_write32(const struct pci_dev *d, u8 off, u32 v)
{
    outl(PCI_ADDR, pci_addr(d, off));
    outl(PCI_DATA, v);
}

u8 pci_read8(const struct pci_dev *d, u8 off)
{
    return (u8)(pci_read32(d, off) >> (8 * (off & 3)));
}

u16 pci_read16(const struct pci_dev *d, u8 off)
{
    return (u16)(pci_read32(d, off) >> (8 * (off & 2)));
}

/* Read-modify-write of the dword: our registers of interest share none with RW1C bits
 * except the status word, which we never write (writing its zeros back is harmless). */
void pci_write16(const struct pci_dev *d, u8 off, u16 v)
{
    u32 old = pci_read32(d, off), sh = 8 * (off & 2);

    if (!(off & 2))
        old &= 0xffff;          /* command: leave status's RW1C bits alone */
    pci_write32(d, off, (old & ~(0xffffu << sh)) | ((u32)v << sh));
}

/* Memory address of a memory BAR (64-bit ones span two registers); 0 if none. */
u64 pci_bar(const struct pci_dev *d, u32 bar)
{
    u32 lo;
    u64 addr;

    if (bar > 5)
        return 0;
    lo = pci_read32(d, (u8)(0x10 + 4 * bar));
    if (lo & 1)
        return 0;
    addr = lo & ~0xfu;
    if (((lo >> 1) & 3) == 2 && bar < 5)
        addr |= (u64)pci_read32(d, (u8)(0x14 + 4 * bar)) << 32;
    return addr;
}

static u8 pci_find_msix(const struct pci_dev *d)
{
    if (!(pci_read16(d, 0x06) & 0x10))
        return 0;
    for (u8 off = pci_read8(d, 0x34) & 0xfc, n = 0; off && n < 48; n++) {
        u32 hdr = pci_read32(d, off);

        if ((hdr & 0xff) == PCI_CAP_MSIX)
            return off;
        off = (hdr >> 8) & 0xfc;
    }
    return 0;
}

static bool pci_probe(struct pci_dev *d)
{
    u32 id = pci_read32(d, 0);

    if ((id & 0xffff) == 0xffff)
        return false;
    d->vendor = (u16)id;
    d->device = (u16)(id >> 16);
    d->msix_cap = 0;
    return true;
}

/* Every function on bus 0 (functions 1..7 only behind a multi-function slot). */
u32 pci_scan(struct pci_dev *out, u32 max)
{
    u32 n = 0;

    for (u8 slot = 0; slot < 32 && n < max; slot++) {
        struct pci_dev d = { .slot = slot };
        u8 funcs;

        if (!pci_probe(&d))
            continue;
        funcs = (pci_read8(&d, 0x0e) & 0x80) ? 8 : 1;
        for (u8 f = 0; f < funcs && n < max; f++) {
            d.func = f;
            if (f && !pci_probe(&d))
                continue;
            if (d.vendor == 0x1af4)
                d.msix_cap = pci_find_msix(&d);
            out[n++] = d;
        }
    }
    return n;
}
