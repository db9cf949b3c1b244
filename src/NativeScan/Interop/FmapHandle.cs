using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Portcullis.NativeScan.Interop;

// Owns one cl_fmap_t and, for handle maps, the GCHandle that libclamav passes back to the pread
// callback: the GCHandle is freed only after cl_fmap_close, so no read can outlive its target.
// A memory map does not own its bytes; the caller keeps them pinned until this handle is disposed.
internal sealed class FmapHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    private GCHandle source;

    internal FmapHandle(nint map, GCHandle source)
        : base(ownsHandle: true)
    {
        SetHandle(map);
        this.source = source;
    }

    protected override bool ReleaseHandle()
    {
        LibClamAV.cl_fmap_close(handle);
        if (source.IsAllocated)
        {
            source.Free();
        }

        return true;
    }
}
