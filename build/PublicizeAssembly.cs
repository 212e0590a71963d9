// MSBuild inline task (compiled by RoslynCodeTaskFactory; see Publicize.targets).
// Writes a copy of a .NET assembly in which every type, method and field is public, for compiling against
// ML.NET internals. Skips work when the copy is newer than its source.
using System;
using System.IO;
using System.Linq;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using Mono.Cecil;

public sealed class GatiPublicizeAssembly : Task
{
    [Required] public string Source { get; set; } = "";
    [Required] public string Destination { get; set; } = "";
    /// <summary>Folders holding the assemblies the source references (Cecil resolves constant types there).</summary>
    public string[] SearchDirectories { get; set; } = new string[0];

    public override bool Execute()
    {
        if (System.IO.File.Exists(Destination) &&
            System.IO.File.GetLastWriteTimeUtc(Destination) >= System.IO.File.GetLastWriteTimeUtc(Source))
            return true;

        var resolver = new DefaultAssemblyResolver();
        foreach (var directory in SearchDirectories.Distinct()) resolver.AddSearchDirectory(directory);
        using var assembly = AssemblyDefinition.ReadAssembly(Source, new ReaderParameters { AssemblyResolver = resolver });
        var changed = 0;
        foreach (var module in assembly.Modules)
            foreach (var type in module.GetTypes())
                changed += Publicize(type);

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(Destination))!);
        var temp = Destination + ".tmp";
        try
        {
            assembly.Write(temp);
            ReplaceFile(temp, Destination);
        }
        finally
        {
            if (System.IO.File.Exists(temp)) System.IO.File.Delete(temp);
        }
        Log.LogMessage(MessageImportance.Normal, "Publicized {0} ({1} members) -> {2}", Path.GetFileName(Source), changed, Destination);
        return true;
    }

    private static int Publicize(TypeDefinition type)
    {
        var changed = 0;
        var wanted = type.IsNested ? TypeAttributes.NestedPublic : TypeAttributes.Public;
        if ((type.Attributes & TypeAttributes.VisibilityMask) != wanted)
        {
            type.Attributes = (type.Attributes & ~TypeAttributes.VisibilityMask) | wanted;
            changed++;
        }
        foreach (var method in type.Methods)
        {
            if (method.IsPublic) continue;
            method.Attributes = (method.Attributes & ~MethodAttributes.MemberAccessMask) | MethodAttributes.Public;
            changed++;
        }
        var eventNames = new System.Collections.Generic.HashSet<string>(type.Events.Select(e => e.Name));
        foreach (var field in type.Fields)
        {
            // Compiler-generated backing fields (of events and auto-properties) stay private: publicizing them
            // makes member lookups ambiguous.
            if (field.IsPublic || eventNames.Contains(field.Name) || field.Name.IndexOf('<') >= 0) continue;
            field.Attributes = (field.Attributes & ~FieldAttributes.FieldAccessMask) | FieldAttributes.Public;
            changed++;
        }
        return changed;
    }

    // netstandard2.0 (what inline tasks compile against) has no File.Move overwrite overload.
    private static void ReplaceFile(string source, string destination)
    {
        if (System.IO.File.Exists(destination)) System.IO.File.Replace(source, destination, null);
        else System.IO.File.Move(source, destination);
    }
}
