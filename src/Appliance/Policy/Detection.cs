namespace Portcullis.Appliance.Policy;

// What a detection is, as far as the choice of action goes. The class comes from the name alone.
public enum DetectionClass
{
    Virus,
    Pua,
    Heuristics,
    Phishing,
    Unofficial,
    Banned,
}

// One reason a message is not clean: a signature name from libclamav, or Banned.<reason> from the
// attachment rules. Precedence when a name fits several classes (first match wins):
//   1. Banned.*       the gateway's own attachment rules, never a signature name
//   2. *Phishing*     (case-insensitive, anywhere: Heuristics.Phishing.Email.SpoofedDomain and
//                     Sanesecurity.Phishing.Bank.123.UNOFFICIAL are phishing)
//   3. PUA.*
//   4. Heuristics.*
//   5. *.UNOFFICIAL   any other signature from an unsigned custom database (libclamav adds the
//                     suffix): what a name says it is decides over where it comes from, so a custom
//                     PUA.* signature follows action_pua
//   6. anything else  a virus
public sealed record Detection(string Name)
{
    public const string BannedPrefix = "Banned.";

    public DetectionClass Class => Classify(Name);

    public static DetectionClass Classify(string name)
    {
        if (name.StartsWith(BannedPrefix, StringComparison.Ordinal)) return DetectionClass.Banned;
        if (name.Contains("Phishing", StringComparison.OrdinalIgnoreCase)) return DetectionClass.Phishing;
        if (name.StartsWith("PUA.", StringComparison.Ordinal)) return DetectionClass.Pua;
        if (name.StartsWith("Heuristics.", StringComparison.Ordinal)) return DetectionClass.Heuristics;
        if (name.EndsWith(".UNOFFICIAL", StringComparison.Ordinal)) return DetectionClass.Unofficial;
        return DetectionClass.Virus;
    }

    public static string ClassName(DetectionClass detectionClass) => detectionClass switch
    {
        DetectionClass.Pua => "pua",
        DetectionClass.Heuristics => "heuristics",
        DetectionClass.Phishing => "phishing",
        DetectionClass.Unofficial => "unofficial",
        DetectionClass.Banned => "banned",
        _ => "virus",
    };

    public override string ToString() => Name;
}
