using Microsoft.Win32.SafeHandles;

namespace Portcullis.NativeScan.Interop;

// Owns one struct cl_engine. Every P/Invoke taking an EngineHandle AddRefs it for the call, and
// ScanEngine holds an extra reference while it reads engine-owned virus names, so Dispose only
// frees the engine after the last scan in flight on it has returned.
internal sealed class EngineHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    private readonly TaskCompletionSource freed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool released;

    internal EngineHandle(nint engine)
        : base(ownsHandle: true)
    {
        SetHandle(engine);
    }

    // Lets tests observe when the native engine is actually freed, as opposed to disposed.
    internal bool Released => released;

    // Completes once cl_engine_free has run: a reload waits on it to return memory to the system.
    internal Task Freed => freed.Task;

    protected override bool ReleaseHandle()
    {
        released = true;
        var ok = LibClamAV.cl_engine_free(handle) == LibClamAV.cl_error_t.CL_SUCCESS;
        freed.TrySetResult();
        return ok;
    }
}
