using System.Runtime.InteropServices;
using Portcullis.NativeScan.Interop;

namespace Portcullis.NativeScan;

// Notices when freshclam (or an operator) changes the signature folder: cl_statinidir records the
// database files' stat data, cl_statchkdir compares it again. Polled from one timer thread.
public sealed unsafe class DatabaseWatch : IDisposable
{
    private LibClamAV.cl_stat* state;

    public DatabaseWatch(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ClamAV.Initialize();
        Folder = Path.GetFullPath(folder);
        state = (LibClamAV.cl_stat*)NativeMemory.AllocZeroed((nuint)sizeof(LibClamAV.cl_stat));
        var code = LibClamAV.cl_statinidir(Folder, state);
        if (code != LibClamAV.cl_error_t.CL_SUCCESS)
        {
            LibClamAV.cl_statfree(state);
            NativeMemory.Free(state);
            state = null;
            LibClamAV.ThrowIfError(code, $"watching {Folder}");
        }
    }

    ~DatabaseWatch() => Free();

    public string Folder { get; }

    // True when a database file was added, removed or rewritten since this watch was created.
    public bool HasChanged()
    {
        ObjectDisposedException.ThrowIf(state == null, this);
        var changed = LibClamAV.cl_statchkdir(state);
        if (changed < 0 || changed > 1)
        {
            LibClamAV.ThrowIfError((LibClamAV.cl_error_t)changed, $"checking {Folder}");
        }

        return changed == 1;
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (state != null)
        {
            LibClamAV.cl_statfree(state);
            NativeMemory.Free(state);
            state = null;
        }
    }
}
