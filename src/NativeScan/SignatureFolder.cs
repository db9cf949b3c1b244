using Portcullis.NativeScan.Interop;

namespace Portcullis.NativeScan;

// What a signature folder holds, for status and the X-Virus-Scanned header: the versions in the
// .cvd/.cld headers (daily first, as clamd reports it) and the newest build or file time.
// A folder of hand-written .hdb/.ndb files has no header and reports "custom".
internal static unsafe class SignatureFolder
{
    internal static (string Version, DateTimeOffset? Time) Describe(string folder)
    {
        var versions = new List<(string Database, uint Version)>();
        DateTimeOffset? newest = null;
        DateTimeOffset? newestBuild = null;
        foreach (var path in Directory.EnumerateFiles(folder))
        {
            var written = new DateTimeOffset(File.GetLastWriteTimeUtc(path), TimeSpan.Zero);
            newest = newest is null || written > newest ? written : newest;

            var extension = Path.GetExtension(path);
            if (!extension.Equals(".cvd", StringComparison.OrdinalIgnoreCase)
                && !extension.Equals(".cld", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            var head = LibClamAV.cl_cvdhead(path);
            if (head == null)
            {
                continue;
            }

            try
            {
                versions.Add((Path.GetFileNameWithoutExtension(path), head->version));
                if (head->stime != 0)
                {
                    var built = DateTimeOffset.FromUnixTimeSeconds(head->stime);
                    newestBuild = newestBuild is null || built > newestBuild ? built : newestBuild;
                }
            }
            finally
            {
                LibClamAV.cl_cvdfree(head);
            }
        }

        if (versions.Count == 0)
        {
            return ("custom", newest);
        }

        var ordered = versions
            .OrderBy(v => v.Database switch { "daily" => 0, "main" => 1, "bytecode" => 2, _ => 3 })
            .ThenBy(v => v.Database, StringComparer.Ordinal)
            .Select(v => $"{v.Database} {v.Version}");
        return (string.Join(", ", ordered), newestBuild ?? newest);
    }
}
