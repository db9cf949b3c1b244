using System.Text.RegularExpressions;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Policy;

// The attachment policy of one message scan, run by libclamav's callbacks on the scanner thread
// (see ScanInspector): every file libclamav unpacks is checked by name (banned_extensions, double)
// and by type by magic (banned_types), every archive entry by name and encryption
// (encrypted_archives), and the message itself, plus every embedded message libclamav decodes, by
// MimeStructureCheck (declared Content-Types, header names, ambiguity). One instance per scan.
//
// maxParts (max_files with alert_exceeds_max on, else 0): a message with more MIME entities is
// stopped before libclamav parses it, as Heuristics.Limits.Exceeded.MaxFiles; libclamav's MIME
// parser would otherwise hold every part of it in memory first.
public sealed partial class AttachmentInspector(BannedAttachments rules, int maxParts = 0) : ScanInspector
{
    public static AttachmentInspector For(BannedAttachments rules, Configuration.ScanSection scan) =>
        new(rules, scan.AlertExceedsMax ? scan.MaxFiles : 0);

    public override string? InspectFile(in EmbeddedFile file)
    {
        if (file.Depth == 0)
        {
            // The message as received: its structure, with the strict first-line rule.
            var found = MimeStructureCheck.CheckMessage(file.Content, rules, maxParts: maxParts);
            StopScan = found == MimeStructureCheck.TooManyParts;
            return found;
        }

        if (rules.CheckType(file.Type) is { } bannedType)
        {
            return bannedType;
        }

        // A scratch name is tested as libclamav's bytes: most messages have one, and it is never checked.
        var name = IsScratchName(file.NameUtf8) ? null : file.Name;
        if (name is not null && rules.CheckFileName(name) is { } bannedName)
        {
            return bannedName;
        }

        // libclamav gives a decompressed stream no name, but gunzip calls it by the archive's name
        // without .gz, and 7-Zip by the name in the gzip header (RFC 1952 FNAME).
        if (file.Type is "GZ" or "BZ" or "XZ")
        {
            return rules.CheckFileName(CompressedMemberName(name))
                ?? (file.Type is "GZ" ? rules.CheckFileName(GzipHeaderName(file.Content)) : null);
        }

        // A message/rfc822 libclamav decoded ("textportion"), or a message inside an archive.
        return file.Type is "MAIL" ? MimeStructureCheck.CheckMessage(file.Content, rules, strictStart: false) : null;
    }

    // evil.exe.gz -> evil.exe; a.tgz -> a.tar.
    private static string? CompressedMemberName(string? name)
    {
        if (name is null) return null;
        var dot = name.LastIndexOf('.');
        if (dot <= 0) return null;
        return name[(dot + 1)..].ToLowerInvariant() switch
        {
            "gz" or "bz2" or "xz" or "z" or "gzip" => name[..dot],
            "tgz" or "tbz" or "tbz2" or "txz" => name[..dot] + ".tar",
            _ => null,
        };
    }

    // The FNAME field of a gzip header (RFC 1952 §2.3), or null.
    internal static string? GzipHeaderName(ReadOnlySpan<byte> gzip)
    {
        const byte FEXTRA = 4, FNAME = 8;
        if (gzip.Length < 10 || gzip[0] != 0x1f || gzip[1] != 0x8b || (gzip[3] & FNAME) == 0) return null;
        var at = 10;
        if ((gzip[3] & FEXTRA) != 0)
        {
            if (gzip.Length < 12) return null;
            at += 2 + (gzip[10] | gzip[11] << 8);
        }

        if (at >= gzip.Length) return null;
        var end = gzip[at..].IndexOf((byte)0);
        if (end <= 0) return null;
        // ISO 8859-1 per RFC 1952; capped, as only the extension matters.
        return System.Text.Encoding.Latin1.GetString(gzip.Slice(at, Math.Min(end, 1024)));
    }

    public override string? InspectArchiveEntry(in ArchiveEntry entry)
    {
        if (entry.Encrypted && rules.BlocksEncrypted)
        {
            return BannedAttachments.EncryptedArchive;
        }

        // Entries libclamav cannot extract (an encrypted or unsupported method) have only this name.
        return entry.Name is { } name && !IsScratchName(name) ? rules.CheckFileName(name) : null;
    }

    // The name libclamav gives content it decoded without one (uuencode, binhex): not the sender's.
    private static bool IsScratchName(string name) => ScratchName().IsMatch(name);

    private static bool IsScratchName(ReadOnlySpan<byte> utf8)
    {
        // Only ASCII matches: 43 bytes, or 44 with the newline $ allows.
        if (utf8.Length is not (43 or 44)) return false;
        Span<char> name = stackalloc char[44];
        return ScratchName().IsMatch(name[..System.Text.Encoding.UTF8.GetChars(utf8, name)]);
    }

    [GeneratedRegex("^clamav-[0-9a-f]{32}\\.tmp$")]
    private static partial Regex ScratchName();
}
