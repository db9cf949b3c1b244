using Microsoft.Win32.SafeHandles;

namespace Portcullis.NativeScan.Interop;

// Owns one struct cl_engine. Every P/Invoke taking an EngineHandle AddRefs it for the call, and
// ScanEngine holds an extra reference while it reads engine-owned virus names, so Dispose only
// frees the engine after the last scan in flight on it has returned.
internal sealed class EngineHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    private volatile bool released;

    internal EngineHandle(nint engine)
        : base(ownsHandle: true)
    {
        SetHandle(engine);
    }

    // Lets tests observe when the native engine is actually freed, as opposed to disposed.
    internal bool Released => released;

    protected override bool ReleaseHandle()
    {
        released = true;
        return LibClamAV.cl_engine_free(handle) == LibClamAV.cl_error_t.CL_SUCCESS;
    }
}
