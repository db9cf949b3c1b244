using System.Runtime.InteropServices;

namespace Portcullis.NativeScan;

// glibc keeps what libclamav freed in its arenas (one per scanner thread); malloc_trim(0) gives
// the free pages of every arena back to the system.
public static partial class HeapTrim
{
    [LibraryImport("libc")]
    private static partial int malloc_trim(nuint pad);

    public static void Trim()
    {
        try
        {
            malloc_trim(0);
        }
        catch (EntryPointNotFoundException)
        {
            // Not glibc (musl): nothing to trim.
        }
    }
}
