using System.Text.RegularExpressions;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Policy;

// The attachment policy of one message scan, run by libclamav's callbacks on the scanner thread
// (see ScanInspector): every file libclamav unpacks is checked by name (banned_extensions, double)
// and by type by magic (banned_types), every archive entry by name and encryption
// (encrypted_archives), and the message itself, plus every embedded message libclamav decodes, by
// MimeStructureCheck (declared Content-Types, header names, ambiguity). One instance per scan.
public sealed partial class AttachmentInspector(BannedAttachments rules) : ScanInspector
{
    public override string? InspectFile(in EmbeddedFile file)
    {
        if (file.Depth == 0)
        {
            // The message as received: its structure, with the strict first-line rule.
            return MimeStructureCheck.CheckMessage(file.Content, rules);
        }

        if (rules.CheckType(file.Type) is { } bannedType)
        {
            return bannedType;
        }

        if (file.Name is { } name && !IsScratchName(name) && rules.CheckFileName(name) is { } bannedName)
        {
            return bannedName;
        }

        // A message/rfc822 libclamav decoded ("textportion"), or a message inside an archive.
        return file.Type is "MAIL" ? MimeStructureCheck.CheckMessage(file.Content, rules, strictStart: false) : null;
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

    [GeneratedRegex("^clamav-[0-9a-f]{32}\\.tmp$")]
    private static partial Regex ScratchName();
}
